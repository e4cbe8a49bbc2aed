"""Packages import only downward, in the one order that docs/architecture.md declares.

Every import of a monosemantic module (relative or absolute, at module level or inside a
function) is mapped to the top-level package or module it lands in, which must be the
importer's own or one declared below it. Imports of the project's own modules inside functions
(which hide cycles until the function runs) are kept to the top of the stack.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Where importing the project's own modules inside a function is allowed: the package's
# __init__ (lazy, so `import monosemantic` stays cheap) and the top of the stack, where it
# keeps `monosemantic --help` fast.
LAZY_ALLOWED = {"monosemantic/__init__.py", "monosemantic/cli.py", "monosemantic/demo.py"}


class Import(NamedTuple):
    file: str  # e.g. "monosemantic/features/analysis.py"
    line: int
    importer: str  # the importing file's top-level package or module, e.g. "features"
    target: str  # the imported one, e.g. "evaluation"; "" for the root package itself
    lazy: bool  # inside a function (or any block below module level)


def declared_layers(text: str) -> list[str]:
    """The layer order, bottom first, from the arrow line of the "Layers" section."""
    section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        if "→" in line:
            return [part.strip().strip("`") for part in line.split("→")]
    raise AssertionError("docs/architecture.md has no `a` → `b` → ... line in its Layers section")


def _top_level(src: Path) -> set[str]:
    package = src / "monosemantic"
    return {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}


def project_imports(src: Path) -> list[Import]:
    """Every import of a monosemantic module under ``src/monosemantic``."""
    found = []
    for path in sorted((src / "monosemantic").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts  # ("monosemantic", "features", "data")
        package = parts[:-1]  # the package a relative import starts from
        importer = parts[1] if len(parts) > 1 else "__init__"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        module_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else ()
                dotted = (*base, *(node.module.split(".") if node.module else ()))
                # `from .. import baselines`: the names are modules of the package imported from.
                targets = [(*dotted, alias.name) for alias in node.names] if len(dotted) == 1 else [dotted]
            elif isinstance(node, ast.Import):
                targets = [tuple(alias.name.split(".")) for alias in node.names]
            else:
                continue
            for target in targets:
                if target[0] == "monosemantic":
                    found.append(Import(str(path.relative_to(src)), node.lineno, importer,
                                        target[1] if len(target) > 1 else "", id(node) not in module_level))
    return found


def violations(src: Path, layers: list[str]) -> list[str]:
    """Each import that goes up (or sideways to a package the order does not know), as one line."""
    rank = {name: i for i, name in enumerate(layers)}
    modules = _top_level(src)
    bad = []
    for imp in project_imports(src):
        if imp.importer == "__init__":
            if not imp.lazy:
                bad.append(f"{imp.file}:{imp.line} imports monosemantic.{imp.target} when the package is imported")
            continue
        if imp.target in ("", imp.importer) or (imp.target not in rank and imp.target not in modules):
            continue  # the root package's attributes, the importer's own package, or a name that is no module
        if imp.target not in rank or imp.importer not in rank:
            unknown = imp.target if imp.target not in rank else imp.importer
            bad.append(f"{imp.file}:{imp.line}: {unknown} has no place in the layer order")
        elif rank[imp.target] > rank[imp.importer]:
            bad.append(f"{imp.file}:{imp.line}: {imp.importer} imports {imp.target}, which is above it")
    return bad


def test_every_package_has_a_layer():
    layers = declared_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    assert len(layers) == len(set(layers)), layers
    missing = _top_level(SRC) - set(layers)
    assert not missing, f"declare {sorted(missing)} in the Layers line of docs/architecture.md"


def test_packages_import_only_downward():
    layers = declared_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    assert violations(SRC, layers) == []


def test_own_modules_are_imported_at_module_level():
    lazy = sorted({f"{imp.file}:{imp.line} (monosemantic.{imp.target})" for imp in project_imports(SRC)
                   if imp.lazy and imp.file not in LAZY_ALLOWED})
    assert lazy == [], "import these at the top of the module (a function-level import hides a cycle)"


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"monosemantic/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_check_finds_upward_imports_of_every_form(tmp_path):
    layers = ["errors", "data", "features", "evaluation"]
    files = {"monosemantic/errors.py": "", "monosemantic/evaluation/__init__.py": "",
             "monosemantic/features/__init__.py": "", "monosemantic/features/data.py": "",
             "monosemantic/data/__init__.py": "from ..errors import X\nfrom monosemantic import data\n"}
    assert violations(_package(tmp_path / "ok", files), layers) == []
    upward = {"relative": "from ..features.data import FeatureData\n",
              "package": "from .. import evaluation\n",
              "absolute": "import monosemantic.features.data\n",
              "lazy": "def f():\n    from monosemantic.evaluation import x\n"}
    for form, text in upward.items():
        src = _package(tmp_path / form, {**files, "monosemantic/data/windows.py": text})
        found = violations(src, layers)
        assert len(found) == 1 and re.search(r"data/windows\.py:\d+: data imports \w+, which is above it", found[0]), \
            (form, found)
    eager_root = _package(tmp_path / "root", {**files, "monosemantic/__init__.py": "from .data import x\n"})
    assert violations(eager_root, layers) == [
        "monosemantic/__init__.py:1 imports monosemantic.data when the package is imported"]
    unplaced = _package(tmp_path / "unplaced", {**files, "monosemantic/newthing/__init__.py": "from ..data import x\n"})
    assert violations(unplaced, layers) == [
        "monosemantic/newthing/__init__.py:1: newthing has no place in the layer order"]


def test_the_declared_order_is_read_from_the_document():
    text = "# A\n\n## Layers\n\nFrom the bottom:\n\n`errors` → `data` → `cli`\n\n## Packages\n\n`x` → `y`\n"
    assert declared_layers(text) == ["errors", "data", "cli"]
