"""Language models and the activation sites they expose."""

from .capture import capture
from .embedded import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_gguf
from .loading import LanguageModel, load_model, parse_dtype
from .sites import BLOCK_SITE_KINDS, Site, SiteIndex
from .splice import splice

__all__ = ["BLOCK_SITE_KINDS", "DEFAULT_MODEL", "EMBEDDED_MODELS", "LanguageModel", "Site", "SiteIndex",
           "capture", "embedded_gguf", "load_model", "parse_dtype", "splice"]
