"""Training dictionaries: one loop feeding each batch to many dictionaries, with exact resume.

Example::

    from monosemantic.dictionaries import make_dictionary
    from monosemantic.training import StoreSource, TrainConfig, Trainer

    source = StoreSource("acts/", "blocks.6.resid_post")
    sae = make_dictionary("topk", source.layout.input_shape[-1], 4608, k=32)
    result = Trainer({"topk": sae}, TrainConfig(total_tokens=50_000_000), "runs/topk").fit(source)

Sources: :class:`TensorSource` (in memory), :class:`StoreSource` (an activation store) and
:class:`LiveSource` (a model run on the fly). ``sweep`` trains a grid of sparsity x size
from one pass; ``train_from_store``, ``sweep_from_store`` and ``train_live`` go from data to
saved dictionaries in one call (what the CLI runs). Under torchrun the same calls train
data-parallel. Rerunning with the same ``out_dir`` resumes.
"""

from .config import TrainConfig
from .layout import Batch, Layout
from .live import LiveSource
from .metrics import read_metrics
from .normalize import Scales
from .recipes import sweep_from_store, train_every_layer, train_from_store, train_live
from .sources import BatchSource, StoreSource, TensorSource
from .sweep import DictionarySpec, build_dictionaries, dictionary_name, sweep, sweep_specs
from .trainer import Trainer, TrainResult

__all__ = ["Batch", "BatchSource", "DictionarySpec", "Layout", "LiveSource", "Scales", "StoreSource",
           "TensorSource", "TrainConfig", "TrainResult", "Trainer", "build_dictionaries", "dictionary_name",
           "read_metrics", "sweep", "sweep_from_store", "sweep_specs", "train_every_layer", "train_from_store",
           "train_live"]
