"""Circuits: transcoders at every layer as a replacement model, attribution graphs, interventions.

``Replacement(lm, transcoders)`` pairs a model with ``transcoders``/``clt`` dictionaries (trained
by ``training.train_every_layer``, or ``monosemantic replace``); ``evaluate_replacement`` splices
every layer at once. ``trace(replacement, prompt, target)`` builds a pruned attribution graph
(``Graph``, JSON via ``save``/``load_graph``) and ``intervene`` ablates, clamps or steers
features to check what a graph claims.
"""

from .attribution import Attribution, TargetSpec, attribute, influence, linear_forward
from .examples import Example, feature_examples
from .graph import SCHEMA, SCHEMA_VERSION, Graph, build_graph, load_graph, scores
from .intervene import FeatureChange, FeatureEdit, InterventionResult, intervene
from .linearise import Freeze, frozen
from .replacement import Editor, Replacement, ReplacementResult, evaluate_replacement
from .trace import prompt_ids, single_token, trace

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Attribution", "Editor", "Example", "FeatureChange", "FeatureEdit", "Freeze",
           "Graph", "InterventionResult", "Replacement", "ReplacementResult", "TargetSpec", "attribute",
           "build_graph", "evaluate_replacement", "feature_examples", "frozen", "influence", "intervene",
           "linear_forward", "load_graph", "prompt_ids", "scores", "single_token", "trace"]
