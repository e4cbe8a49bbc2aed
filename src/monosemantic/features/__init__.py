"""Features: what each latent of a dictionary responds to and what it does.

- :func:`analyze_features`: one streaming pass over token windows, producing :class:`FeatureData`
  (top and quantile examples, negatives, histograms, density, logit effects, input tokens), saved
  as a folder and loaded back without the model; :func:`site_activations` captures a site once for
  several dictionaries.
- :func:`prompt_view`: the top features (and, beside them, the top raw neurons) of one prompt,
  rendered in the terminal (:func:`render_terminal`); its HTML page is ``viz.prompt_html``.
- :func:`write_explanations`: explanations and scores stored beside the feature data.
"""

from .analysis import analyze_features, site_activations
from .data import Example, FeatureData, dictionary_fingerprint
from .explanations import read_explanations, write_explanations
from .prompt import PromptView, ViewRow, prompt_view
from .terminal import render_terminal

__all__ = ["Example", "FeatureData", "PromptView", "ViewRow", "analyze_features", "dictionary_fingerprint",
           "prompt_view", "read_explanations", "render_terminal", "site_activations", "write_explanations"]
