"""Run directories for the results page: what each one holds, and safe access to its files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.training.run_dir import (
    EVALUATION_FILE,
    LAB_FILE,
    METRICS_FILE,
    REPORT_FILE,
    read_json,
)
from serving.errors import UserError

log = logging.getLogger("app.web.runs")

# Files that make a folder a run dir; the JSON ones are shown on the results page.
SUMMARY_FILES = (METRICS_FILE, EVALUATION_FILE, LAB_FILE)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# What /runs/ may serve; SVG and HTML are left out on purpose (they can carry scripts).
CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".json": "application/json",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".jsonl": "text/plain; charset=utf-8",
    ".csv": "text/plain; charset=utf-8",
}
# The raw files a run card links to ("raw JSON" one click away).
RAW_SUFFIXES = (".json", ".jsonl", ".csv", ".md")

# A summary bigger than this is listed but not inlined (evaluation files can hold every example).
MAX_SUMMARY_BYTES = 1_000_000
MAX_IMAGES_PER_RUN = 60


def _is_run_dir(folder: Path) -> bool:
    """True when the folder holds a summary file or a plot."""
    if any((folder / name).is_file() for name in SUMMARY_FILES):
        return True
    return any(_is_image(p) and p.is_file() for p in folder.iterdir())


def _run_dirs(root: Path) -> list[Path]:
    """Run dirs under root: `<task>/<run-id>/` as the trainer writes them, or `<run>/` directly."""
    found = []
    for first in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _is_run_dir(first):
            found.append(first)
            continue
        for second in sorted(first.iterdir()):
            if second.is_dir() and not second.name.startswith(".") and _is_run_dir(second):
                found.append(second)
    return found


def _read_summary(path: Path) -> Any:
    """The parsed JSON, or a note saying why it is not shown."""
    size = path.stat().st_size
    if size > MAX_SUMMARY_BYTES:
        return {"note": f"{path.name} is {size:,} bytes, too large to show here"}
    try:
        return read_json(path)
    except (OSError, UnicodeDecodeError) as err:
        return {"note": f"{path.name} could not be read: {err}"}
    except UserError:  # not valid JSON (the message would show the server's own path)
        return {"note": f"{path.name} could not be read: it is not valid JSON"}


def _is_image(path: Path) -> bool:
    """A plot we list; hidden names are half-written temporaries (the run dir writes atomically)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _images(run: Path, root: Path) -> list[str]:
    """Plots in the run dir and one level of sub-folders (galleries), as paths relative to root."""
    images = [p for p in sorted(run.iterdir()) if _is_image(p)]
    for sub in sorted(p for p in run.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images.extend(p for p in sorted(sub.iterdir()) if _is_image(p))
    # Keep curves first: it is the plot every training run has.
    images.sort(key=lambda p: (p.name != "curves.png", str(p)))
    names = [p.relative_to(root).as_posix() for p in images]
    # Only what /runs/ will serve: a symlink pointing out of the runs dir is left out.
    return [name for name in names if resolve_run_file(root, name)][:MAX_IMAGES_PER_RUN]


def describe_run(run: Path, root: Path) -> dict[str, Any]:
    """Everything the results page shows about one run dir.

    Args:
        run: the run dir.
        root: the runs dir it lies in (image paths are given relative to it).
    """
    relative = run.relative_to(root).as_posix()
    parts = relative.split("/")
    report = run / REPORT_FILE
    return {
        "path": relative,
        "task": parts[0],
        "run_id": parts[-1],
        "kind": "lab" if (run / LAB_FILE).is_file() else "training",
        "modified": run.stat().st_mtime,
        "summaries": {name: _read_summary(run / name)
                      for name in SUMMARY_FILES if (run / name).is_file()},
        "report": report.read_text(encoding="utf-8", errors="replace")[:MAX_SUMMARY_BYTES]
        if report.is_file() else None,
        "images": _images(run, root),
        "files": sorted(p.name for p in run.iterdir()
                        if p.suffix.lower() in RAW_SUFFIXES and p.is_file()
                        and resolve_run_file(root, p.relative_to(root).as_posix())),
    }


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run under the runs dir, newest first within each task; empty if the dir is missing.

    Args:
        root: the runs dir (`runs/` by default).
    """
    if not root.is_dir():
        return []
    runs = []
    for run in _run_dirs(root):
        try:
            runs.append(describe_run(run, root))
        except OSError as err:  # a run being written or deleted while we look
            log.warning("skipping run dir %s: %s", run, err)
    runs.sort(key=lambda r: (r["task"], -r["modified"]))
    return runs


def resolve_run_file(root: Path, relative: str) -> Path | None:
    """The file `relative` names inside the runs dir, or None if it is not one we may serve.

    Refuses absolute paths, `..`, hidden names, backslashes, file types outside CONTENT_TYPES and
    anything that resolves (through symlinks too) outside root.

    Args:
        root: the runs dir.
        relative: the URL path after `/runs/`, already percent-decoded.
    """
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    if Path(parts[-1]).suffix.lower() not in CONTENT_TYPES:
        return None
    base = root.resolve()
    try:
        candidate = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate
