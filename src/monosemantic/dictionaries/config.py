"""What a dictionary is: its architecture, widths, sites and hyper-parameters.

The config is saved beside the weights, so it holds everything needed to rebuild the module
(options with their defaults filled in) and nothing that is not JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from ..errors import MonosemanticError

FORMAT_VERSION = 1


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MonosemanticError(f"dictionary {name} must be a positive integer; got {value!r}; pass e.g. {name}=768")
    return value


def _optional_str(name: str, value) -> str | None:
    if value is not None and not isinstance(value, str):
        raise MonosemanticError(f"dictionary {name} must be a string or None; got {value!r}")
    return value


@dataclass(frozen=True)
class DictionaryConfig:
    """Architecture, widths and hyper-parameters of one dictionary; saved as ``config.json``."""

    arch: str  # registered architecture name, e.g. "topk"
    d_in: int  # width of the input site
    d_sae: int  # number of latents (F)
    d_out: int | None = None  # width of the output site; None means d_in (an autoencoder)
    skip: bool = False  # transcoder skip connection W_skip [d_out, d_in]
    site_in: str | None = None  # where inputs are read, e.g. "blocks.6.mlp_in"
    site_out: str | None = None  # where targets are read; differs from site_in for transcoders
    model: str | None = None  # the language model the sites belong to
    options: dict = field(default_factory=dict, hash=False)  # architecture hyper-parameters, JSON only
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch:
            raise MonosemanticError(f"dictionary arch must be a non-empty string; got {self.arch!r}")
        _positive_int("d_in", self.d_in)
        _positive_int("d_sae", self.d_sae)
        # Resolved here so every reader sees an integer output width.
        object.__setattr__(self, "d_out", self.d_in if self.d_out is None else _positive_int("d_out", self.d_out))
        if not isinstance(self.skip, bool):
            raise MonosemanticError(f"dictionary skip must be True or False; got {self.skip!r}")
        for name in ("site_in", "site_out", "model"):
            _optional_str(name, getattr(self, name))
        _positive_int("format_version", self.format_version)
        object.__setattr__(self, "options", _json_copy(self.options))

    @property
    def is_transcoder(self) -> bool:
        """True when the dictionary maps one site to another rather than reconstructing its input."""
        return self.skip or self.d_out != self.d_in or (
            self.site_out is not None and self.site_out != self.site_in)

    def to_dict(self) -> dict:
        return _json_copy(asdict(self))

    @classmethod
    def from_dict(cls, data: dict, where: str = "dictionary config") -> DictionaryConfig:
        if not isinstance(data, dict):
            raise MonosemanticError(f"{where} must be a JSON object; got {type(data).__name__}")
        # Checked first: a newer format may well have fields this version does not know.
        version = data.get("format_version", FORMAT_VERSION)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise MonosemanticError(
                f"{where} has format_version {version}, this monosemantic reads up to {FORMAT_VERSION}; "
                "upgrade monosemantic")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MonosemanticError(
                f"{where} has unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}; "
                "was it written by a newer monosemantic?")
        missing = [n for n in ("arch", "d_in", "d_sae") if n not in data]
        if missing:
            raise MonosemanticError(f"{where} lacks field(s) {', '.join(missing)}; the file is incomplete")
        return cls(**data)


def _json_copy(value):
    # A JSON round trip both checks that options are JSON-simple and decouples the frozen
    # config from the caller's (mutable) dict.
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise MonosemanticError(
            f"dictionary options must be JSON values (numbers, strings, lists, dicts); {err}") from None
