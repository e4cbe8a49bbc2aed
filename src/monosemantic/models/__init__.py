"""Language models and the activation sites they expose."""

from .capture import capture
from .embedded import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_gguf
from .loading import LanguageModel, load_model, parse_dtype
from .modes import eval_mode
from .random_init import RANDOM_INIT, random_init_spec, randomly_initialised
from .sites import BLOCK_SITE_KINDS, Site, SiteIndex
from .splice import splice

__all__ = ["BLOCK_SITE_KINDS", "DEFAULT_MODEL", "EMBEDDED_MODELS", "LanguageModel", "RANDOM_INIT", "Site", "SiteIndex",
           "capture", "embedded_gguf", "eval_mode", "load_model", "parse_dtype", "random_init_spec",
           "randomly_initialised", "splice"]
