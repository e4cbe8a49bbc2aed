"""The train / held-out split of stored rows: the one rule in :mod:`monosemantic.data.split`."""

from ..data.split import SPLITS, check_split, held_out, in_split

__all__ = ["SPLITS", "check_split", "held_out", "in_split"]
