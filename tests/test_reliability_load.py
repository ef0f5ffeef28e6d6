"""The sentiment model under load from 64 concurrent clients, REST and gRPC mixed, while a new
version is dropped into the base path: no request may fail, the new version must take over and
the old one be released. bench/load.py does the work; the full 10,000-request run is slow."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from pipelines.datasets import imdb

# Wall-clock bounds: `make test` runs this file alone, after the parallel part.
pytestmark = pytest.mark.timing

REPO = Path(__file__).resolve().parent.parent


def _bench_load():
    spec = importlib.util.spec_from_file_location("bench_load", REPO / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load = _bench_load()


@pytest.fixture(scope="module")
def sentiment_base(shared_data, tfds_dir, tmp_path_factory) -> Path:
    """A base path with the sentiment model: the real export if present, else untrained."""
    imdb.prepare()
    return load.prepare_base_path(tmp_path_factory.mktemp("load"))


def check(report: dict, requests: int) -> None:
    print("\n" + json.dumps(report, indent=1))
    assert report["errors"] == 0, report["error_kinds"]
    assert report["requests"] >= requests and report["clients"] == 64
    assert report["by_protocol"]["rest"] > 0 and report["by_protocol"]["grpc"] > 0
    assert report["load_failures"] == 0
    swap = report["swap"]
    answered = report["grpc_answered_by_version"]
    assert answered.get(str(swap["old_version"]), 0) > 0
    assert answered.get(str(swap["new_version"]), 0) > 0
    assert swap["new_version_took_over"] and swap["old_version_released"]
    assert report["version_states_after"] == {str(swap["new_version"]): "AVAILABLE",
                                              str(swap["old_version"]): "END"}


def test_mixed_load_with_a_new_version_dropped_in(sentiment_base, tmp_path):
    check(load.load_run(sentiment_base, tmp_path, requests=1500, clients=64, swap_at=0.25,
                        max_seconds=240), 1500)


@pytest.mark.slow
def test_ten_thousand_requests(sentiment_base, tmp_path):
    check(load.load_run(sentiment_base, tmp_path, requests=10_000, clients=64, swap_at=0.5,
                        max_seconds=900), 10_000)
