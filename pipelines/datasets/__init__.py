"""The registry of data sets `rnnkit data prepare NAME` can prepare into the TFDS cache."""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time

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


def dataset_names() -> list[str]:
    """Every registered data set name."""
    return sorted(DATASETS)


def prepare_dataset(name: str) -> dict[str, object]:
    """Prepare a registered data set and describe what was prepared.

    Args:
        name: a name in DATASETS.
    """
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}", f"choose one of {dataset_names()}")
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
