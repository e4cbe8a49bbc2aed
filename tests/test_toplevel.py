"""The top-level package: everyday names, imported lazily so that `import monosemantic` stays cheap."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import monosemantic

# Where each everyday name is defined, written out here independently of the package's own map.
EVERYDAY = {
    "load_model": "monosemantic.models",
    "harvest": "monosemantic.activations",
    "ActivationStore": "monosemantic.activations",
    "make_dictionary": "monosemantic.dictionaries",
    "Trainer": "monosemantic.training",
    "TrainConfig": "monosemantic.training",
    "load_dictionary": "monosemantic.formats",
    "evaluate_suite": "monosemantic.evaluation",
    "analyze_features": "monosemantic.features",
    "build_dashboard": "monosemantic.viz",
}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_import_alone_does_not_import_torch():
    out = _run("import monosemantic, sys; assert 'torch' not in sys.modules, 'torch imported'; "
               "dir(monosemantic); monosemantic.__all__")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", sorted(EVERYDAY))
def test_each_name_is_the_real_object(name):
    real = getattr(importlib.import_module(EVERYDAY[name]), name)
    assert getattr(monosemantic, name) is real
    assert callable(real)


def test_names_resolve_in_a_fresh_interpreter():
    # A fresh process catches import cycles that an already-populated sys.modules would hide.
    checks = "; ".join(f"assert monosemantic.{name} is importlib.import_module({module!r}).{name}, {name!r}"
                       for name, module in EVERYDAY.items())
    out = _run(f"import importlib, monosemantic; {checks}")
    assert out.returncode == 0, out.stderr


def test_all_and_dir_list_the_everyday_names():
    assert set(EVERYDAY) <= set(monosemantic.__all__)
    assert set(EVERYDAY) <= set(dir(monosemantic))
    namespace: dict = {}
    exec("from monosemantic import *", namespace)
    assert all(namespace[name] is getattr(monosemantic, name) for name in EVERYDAY)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'load_modle'"):
        monosemantic.load_modle  # noqa: B018
    assert not hasattr(monosemantic, "Dictionary")  # only the everyday names are lifted
