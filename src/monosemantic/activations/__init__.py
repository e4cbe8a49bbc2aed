"""Activation stores: harvest a model's activations to disk and read them back for training.

``harvest(lm, sites, out_dir, n_tokens=...)`` writes a resumable, checksummed store of
safetensors shards; ``ActivationStore(out_dir)`` reads it, with shuffled, split and
memory-bounded ``batches()`` for training dictionaries.
"""

from .harvest import harvest
from .manifest import FORMAT_VERSION, STORAGE_DTYPES, Manifest, ShardRecord, StoreSettings, read_manifest
from .shards import finish_store, row_fields, shard_name, write_shard
from .split import held_out
from .store import ActivationStore, RowTokens

__all__ = ["ActivationStore", "FORMAT_VERSION", "Manifest", "RowTokens", "STORAGE_DTYPES", "ShardRecord",
           "StoreSettings", "finish_store", "harvest", "held_out", "read_manifest", "row_fields", "shard_name",
           "write_shard"]
