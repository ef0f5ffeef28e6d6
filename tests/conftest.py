"""Shared test set-up: quiet TensorFlow, real data location, seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving.logging_setup import quiet_tensorflow

quiet_tensorflow()
REPO = Path(__file__).resolve().parent.parent


def _shared_data() -> Path | None:
    value = os.environ.get("RNNKIT_DATA_DIR")
    if value:
        return Path(value)
    guess = REPO.parent / "shared" / "data"
    return guess if guess.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The mirrored real data (`RNNKIT_DATA_DIR`, else ../shared/data); fails loudly if absent."""
    path = _shared_data()
    if path is None or not path.is_dir():
        pytest.fail("real data not found: set RNNKIT_DATA_DIR to the shared data folder")
    os.environ["RNNKIT_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> Path:
    """A TFDS data dir shared by the whole session (RNNKIT_TFDS_DIR if set, else a temp dir)."""
    value = os.environ.get("RNNKIT_TFDS_DIR")
    path = Path(value) if value else tmp_path_factory.mktemp("tfds")
    os.environ["RNNKIT_TFDS_DIR"] = str(path)
    return path
