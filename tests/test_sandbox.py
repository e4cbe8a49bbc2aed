"""The suite writes nothing into the user's home: every cache a test can fill points elsewhere.

The real home comes from the password database, which the suite's environment cannot redirect.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir).resolve()


def _outside_real_home(path) -> bool:
    return not Path(path).expanduser().resolve().is_relative_to(REAL_HOME)


def test_converted_models_are_cached_outside_the_home():
    from monosemantic.models.gguf_cache import cache_root

    assert _outside_real_home(cache_root())


def test_library_caches_are_outside_the_home():
    import datasets.config as datasets_config  # both in the dev extra
    import matplotlib

    assert _outside_real_home(Path.home())
    assert _outside_real_home(datasets_config.HF_DATASETS_CACHE)
    assert _outside_real_home(matplotlib.get_cachedir())
    assert _outside_real_home(matplotlib.get_configdir())


def test_subprocesses_inherit_the_redirected_home():
    # CLI and torchrun tests run child interpreters; they must see the same redirection.
    code = "from monosemantic.models.gguf_cache import cache_root; print(cache_root())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert _outside_real_home(out.stdout.strip())
