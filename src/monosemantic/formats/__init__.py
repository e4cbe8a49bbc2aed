"""Other tools' dictionary formats: SAELens, dictionary_learning, sparsify, openai, and Neuronpedia export.

``load_dictionary(path_or_repo_id, subfolder=None, format=None)`` reads any of them (the format
is detected from the files present), from a local folder or a Hugging Face repo;
``save_dictionary_as(dictionary, folder, to=...)`` writes SAELens, dictionary_learning,
sparsify or native folders. Conversions are exact: a loaded dictionary's ``encode``/``decode``
give the other library's outputs (pinned by tests on files the libraries wrote themselves).
Site names are translated by :mod:`.sites`; features are exported for Neuronpedia by
:mod:`.neuronpedia`. Formats are found, read and written through the table in :mod:`.registry`;
how each of our architectures appears in each format is one row of :mod:`.architectures`.
"""

from .detect import FORMATS, detect_format
from .load import WRITABLE, load_dictionary, save_dictionary_as
from .sites import from_ours, to_ours

__all__ = ["FORMATS", "WRITABLE", "detect_format", "from_ours", "load_dictionary", "save_dictionary_as", "to_ours"]
