"""The registry of data sets `rnnkit data prepare NAME` can prepare into the TFDS cache."""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
from collections.abc import Iterator

from pipelines.config import tfds_dir
from serving.errors import UserError

log = logging.getLogger("pipelines.datasets")

# data set name -> "module:function"; the function takes no arguments, prepares the data set
# once into pipelines.config.tfds_dir() (offline from RNNKIT_DATA_DIR, else downloading) and
# returns its TFDS builder. Imported only when used.
DATASETS: dict[str, str] = {
    "imdb": "pipelines.datasets.imdb:prepare",
    "spa_eng": "pipelines.datasets.spa_eng:prepare",
    "flickr8k": "pipelines.datasets.flickr8k:prepare",
}


@contextlib.contextmanager
def preparation_lock(name: str) -> Iterator[None]:
    """Hold the lock that lets one process at a time prepare data set `name` in tfds_dir().

    Two runs started together (two terminals, the test suite's workers, workers of a
    multi-worker job on one machine) would otherwise both build the same TFDS folder; the
    second now waits for the first and then finds the data prepared. The operating system
    drops the lock of a process that dies, so a killed preparation never blocks the next.

    Args:
        name: the data set's name (one lock file per data set).
    """
    from filelock import FileLock, Timeout

    folder = tfds_dir()
    lock = FileLock(folder / f".{name}.lock")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0.5)
        except Timeout:
            log.info("waiting for another process that is preparing %s in %s", name, folder)
            lock.acquire()
    except OSError as err:
        # A cache nobody may write to (prepared once, shared read-only) needs no lock to be
        # read; preparing into it fails later with TFDS's own message.
        log.debug("no preparation lock in %s (%s)", folder, err)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def dataset_names() -> list[str]:
    """Every data set name `rnnkit data prepare` takes: TFDS builders and file-based sets."""
    from pipelines.datasets.data_files import NAMED_DATASETS

    return sorted(set(DATASETS) | set(NAMED_DATASETS))


def prepare_dataset(name: str) -> dict[str, object]:
    """Prepare a data set and describe what was prepared.

    A name in DATASETS is built into the TFDS cache; any other `--data` name
    (data_files.NAMED_DATASETS: trec, ud_en_ewt, wikitext2) is read from its files
    (the offline mirror, or a download on first use), every split once, and counted.

    Args:
        name: a name in dataset_names().
    """
    if name not in dataset_names():
        raise UserError(f"unknown data set {name!r}", f"choose one of {dataset_names()}")
    if name not in DATASETS:
        return _prepare_named(name)
    module_name, _, function_name = DATASETS[name].partition(":")
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress; stdout is for results
        builder = getattr(importlib.import_module(module_name), function_name)()
    return {
        "dataset": name,
        "tfds_name": builder.info.full_name,
        "data_dir": str(builder.data_dir),
        "splits": {split: info.num_examples for split, info in builder.info.splits.items()},
        "wall_time_s": round(time.monotonic() - started, 2),
    }


def _prepare_named(name: str) -> dict[str, object]:
    """Fetch a file-based data set's splits and count their rows (each read end to end, so a
    damaged file fails here, not in the middle of training)."""
    from pipelines.datasets.data_files import named_dataset

    started = time.monotonic()
    named = named_dataset(name)
    splits = {split: sum(1 for _ in named.rows(split)) for split in named.splits}
    return {"dataset": name, "kind": named.kind, "description": named.description,
            "splits": splits, "wall_time_s": round(time.monotonic() - started, 2)}
