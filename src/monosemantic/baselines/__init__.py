"""Baselines as dictionaries: every evaluation compares against them for free.

``fit_baseline(kind, x_ND)`` fits one on a sample of activations; each is a
:class:`~monosemantic.dictionaries.Dictionary` registered under its name, so it saves, loads,
encodes, decodes and splices like a trained one. Registration happens when this package is
imported (``dictionaries`` sits below it and cannot import it), so saved baselines load through
``monosemantic.load_dictionary`` (``formats`` imports this package), or through
``load_dictionary_native`` after ``import monosemantic.baselines``.

========== =================================================================================
identity   the neuron basis: codes = x (at ``mlp_hidden`` sites, the MLP's neurons)
pca        top principal directions; codes = projections of the centred input
ica        FastICA (scikit-learn): unmixing as encoder, unit-norm mixing as decoder
random     random unit directions; least-squares codes (or plain projections)
zero       always reconstructs 0 (zero ablation)
mean       always reconstructs the sample mean (mean ablation)
========== =================================================================================
"""

from .constant import MeanBaseline, ZeroBaseline, fit_mean, fit_zero
from .fit import BASELINES, fit_baseline
from .ica import ICABaseline, fit_ica
from .identity import IdentityBaseline, fit_identity
from .linear import LinearBaseline
from .pca import PCABaseline, fit_pca, principal_directions
from .random_directions import RandomBaseline, fit_random, random_unit_rows

__all__ = ["BASELINES", "ICABaseline", "IdentityBaseline", "LinearBaseline", "MeanBaseline", "PCABaseline",
           "RandomBaseline", "ZeroBaseline", "fit_baseline", "fit_ica", "fit_identity", "fit_mean", "fit_pca",
           "fit_random", "fit_zero", "principal_directions", "random_unit_rows"]
