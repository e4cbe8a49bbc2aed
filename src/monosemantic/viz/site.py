"""The static dashboard: ``build_dashboard(feature_folder, out_folder)`` writes a self-contained HTML site.

The site works offline from ``file://``: ``index.html`` with its table data in ``index-data.js``
(a script, not fetched JSON), ``index.js``, ``style.css``, one page per latent under
``features/``, and ``dashboard.json`` naming the dictionary (its fingerprint) the site shows.
The folder is built beside its final place and swapped in, so a reader never sees half a site;
a folder built for another dictionary, or holding anything else, is never replaced.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import MonosemanticError
from ..features import FeatureData, dictionary_fingerprint
from ..folders import replacing_folder
from .assets import INDEX_JS, STYLE_CSS
from .feature_page import feature_page
from .pages import index_data_js, index_page

DASHBOARD_FILE = "dashboard.json"
DASHBOARD_FORMAT = "monosemantic-dashboard"
DASHBOARD_VERSION = 1


def build_dashboard(feature_folder, out_folder, *, dictionary=None, max_pages: int | None = None,
                    progress: bool = True) -> Path:
    """Write the static site for the feature data in ``feature_folder`` to ``out_folder``; returns ``out_folder``.

    ``dictionary`` (optional) is checked against the fingerprint the feature data records.
    ``max_pages`` limits the per-latent pages to the most frequently firing latents (all by default);
    the index lists every latent either way.
    """
    data = feature_folder if isinstance(feature_folder, FeatureData) else FeatureData.load(feature_folder)
    fingerprint = checked_fingerprint(data, dictionary)
    out = Path(out_folder)
    check_replaceable(out, fingerprint)
    pages = page_latents(data, max_pages)
    with replacing_folder(out) as staging:
        write_site(data, staging, pages, fingerprint, progress=progress)
    return out


def checked_fingerprint(data, dictionary) -> str:
    """The feature data's dictionary fingerprint, after checking ``dictionary`` (if given) has the same one."""
    recorded = data.meta.get("fingerprint")
    if not recorded:
        raise MonosemanticError("the feature data records no dictionary fingerprint; analyse the dictionary again "
                                "with this version of monosemantic (monosemantic features)")
    if dictionary is not None and dictionary_fingerprint(dictionary) != recorded:
        raise MonosemanticError(f"the feature data was computed for another dictionary (fingerprint {recorded[:12]}); "
                                "pass the dictionary it was made from, or analyse this one first "
                                "(monosemantic features)")
    return recorded


def read_dashboard(folder) -> dict | None:
    """The parsed ``dashboard.json`` of ``folder``, or None when it has none."""
    path = Path(folder) / DASHBOARD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MonosemanticError(f"{path} is unreadable ({e}); delete the folder to rebuild the dashboard") from None
    if not isinstance(record, dict) or record.get("format") != DASHBOARD_FORMAT:
        raise MonosemanticError(f"{path} is not a monosemantic dashboard record; choose another folder")
    return record


def check_replaceable(out: Path, fingerprint: str) -> None:
    """Refuse ``out`` unless it is absent, empty, or a dashboard of the same dictionary."""
    if not out.exists():
        return
    if not out.is_dir():
        raise MonosemanticError(f"{out} exists and is not a folder; choose another --out for the dashboard")
    if not any(out.iterdir()):
        return
    record = read_dashboard(out)
    if record is None:
        raise MonosemanticError(f"{out} holds files but no {DASHBOARD_FILE}, so it is not a dashboard; refusing to "
                                "replace it; choose an empty or new folder")
    if record.get("fingerprint") != fingerprint:
        raise MonosemanticError(
            f"{out} holds the dashboard of another dictionary (fingerprint {str(record.get('fingerprint'))[:12]}, "
            f"not {fingerprint[:12]}); refusing to overwrite it; choose another --out or delete that folder")


def page_latents(data, max_pages: int | None) -> list[int]:
    """Latents that get a page, in index order: all, or the ``max_pages`` densest."""
    if max_pages is None:
        return list(range(data.n_latents))
    if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 0:
        raise MonosemanticError(f"max_pages must be a non-negative integer or None (all); got {max_pages!r}")
    return sorted(data.latent_order("density")[:max_pages])


def write_site(data, folder: Path, pages: list[int], fingerprint: str, *, progress: bool = True) -> None:
    """Every file of the site into ``folder`` (made fresh)."""
    started = time.perf_counter()
    (folder / "features").mkdir(parents=True)
    _write(folder / "style.css", STYLE_CSS)
    _write(folder / "index.js", INDEX_JS)
    _write(folder / "index.html", index_page(data))
    _write(folder / "index-data.js", index_data_js(data, set(pages)))
    for n, latent in enumerate(tqdm(pages, desc="feature pages", unit="page", disable=not progress)):
        neighbours = (pages[n - 1] if n > 0 else None, pages[n + 1] if n + 1 < len(pages) else None)
        _write(folder / "features" / f"{latent}.html", feature_page(data, latent, neighbours=neighbours))
    record = {"format": DASHBOARD_FORMAT, "format_version": DASHBOARD_VERSION, "fingerprint": fingerprint,
              "n_latents": data.n_latents, "pages": len(pages), "feature_folder": _abs(data.folder),
              "model": data.meta.get("model"), "site": data.meta.get("site"),
              "build_seconds": round(time.perf_counter() - started, 3)}
    _write(folder / DASHBOARD_FILE, json.dumps(record, indent=1))


def _abs(folder) -> str | None:
    return str(Path(folder).resolve()) if folder is not None else None


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
