"""The spa_eng TFDS builder on the mirrored archive: counts, split disjointness, characters."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from pipelines.datasets import spa_eng
from serving.errors import UserError


@pytest.fixture(scope="module")
def splits(shared_data, tfds_dir) -> dict[str, list[tuple[str, str]]]:
    """Every (spanish, english) pair of each prepared split."""
    builder = spa_eng.prepare()
    splits = {}
    for split in ("train", "validation", "test"):
        batches = builder.as_dataset(split=split).batch(8192).as_numpy_iterator()
        splits[split] = [(es.decode(), en.decode()) for batch in batches
                         for es, en in zip(batch["es"], batch["en"], strict=True)]
    return splits


@pytest.fixture(scope="module")
def raw_lines(shared_data) -> list[str]:
    """The archive's `english<TAB>spanish` lines, read without the builder's code."""
    with zipfile.ZipFile(shared_data / "spa-eng" / "spa-eng.zip") as archive:
        return [line for line in archive.read("spa-eng/spa.txt").decode("utf-8").splitlines()
                if line.strip()]


def test_registered_checksum_is_the_mirrored_file(shared_data):
    data = (shared_data / "spa-eng" / "spa-eng.zip").read_bytes()
    info = spa_eng.SpaEng.url_infos[spa_eng.URL]
    assert (info.checksum, int(info.size)) == (hashlib.sha256(data).hexdigest(), len(data))


def test_every_pair_is_kept_and_splits_are_about_90_5_5(splits, raw_lines):
    counts = {split: len(pairs) for split, pairs in splits.items()}
    assert sum(counts.values()) == len(raw_lines) == 118964
    total = len(raw_lines)
    assert abs(counts["train"] / total - 0.90) < 0.01
    assert abs(counts["validation"] / total - 0.05) < 0.01
    assert abs(counts["test"] / total - 0.05) < 0.01
    expected = sorted((line.split("\t")[1], line.split("\t")[0]) for line in raw_lines)
    assert sorted(p for pairs in splits.values() for p in pairs) == expected


def test_a_spanish_sentence_never_sits_in_two_splits(splits):
    seen = {split: {es.lower() for es, _ in pairs} for split, pairs in splits.items()}
    assert not seen["train"] & seen["validation"]
    assert not seen["train"] & seen["test"]
    assert not seen["validation"] & seen["test"]
    # Sentences with several translations exist and stay together.
    test_sources = [es for es, _ in splits["test"]]
    assert len(set(test_sources)) < len(test_sources)


def test_accents_and_inverted_marks_survive(splits):
    spanish = "".join(es for pairs in splits.values() for es, _ in pairs)
    for char in "¿¡áéíóúñü":
        assert char in spanish
    assert any(es.startswith("¿") and "ó" in es for es, _ in splits["test"])


def test_a_corrupted_archive_is_rejected(shared_data, tmp_path, monkeypatch):
    manual = tmp_path / "data" / "spa-eng"
    manual.mkdir(parents=True)
    shutil.copy(shared_data / "spa-eng" / "spa-eng.zip", manual / "spa-eng.zip")
    with open(manual / "spa-eng.zip", "r+b") as f:
        f.seek(1000)
        f.write(b"corrupted")
    monkeypatch.setenv("RNNKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RNNKIT_TFDS_DIR", str(tmp_path / "tfds"))
    with pytest.raises(UserError, match="checksum"):
        spa_eng.prepare()


def test_without_the_archive_or_a_network_it_fails_at_once(tmp_path, monkeypatch):
    """No mirror and an unreachable host: one clear error in seconds, not TFDS's minutes of
    retries (which also outlast a Ctrl-C)."""
    from pipelines.datasets import downloads
    from serving.errors import DataUnavailable

    (tmp_path / "data").mkdir()
    monkeypatch.setenv("RNNKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RNNKIT_TFDS_DIR", str(tmp_path / "tfds"))
    asked = []
    monkeypatch.setattr(downloads, "reachable", lambda url: asked.append(url) or False)
    started = time.monotonic()
    with pytest.raises(DataUnavailable, match=r"spa-eng\.zip does not exist and .* is not "
                                              "reachable"):
        spa_eng.prepare()
    assert asked == [spa_eng.URL] and time.monotonic() - started < 30


def test_prepare_waits_for_another_process_preparing_the_same_data_set(splits, caplog):
    """Two runs started together do not build one TFDS folder at once: the second waits."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time\nfrom pipelines.datasets import preparation_lock\n"
         "with preparation_lock('spa_eng'):\n    print('held', flush=True)\n"
         "    time.sleep(2.5)\n"],
        stdout=subprocess.PIPE, text=True)  # inherits RNNKIT_TFDS_DIR from the tfds_dir fixture
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="pipelines.datasets"):
            builder = spa_eng.prepare()
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert waited > 1.5, "prepare() ran while another process held the data set's lock"
    assert "waiting for another process that is preparing spa_eng" in caplog.text
    assert builder.info.splits["test"].num_examples == len(splits["test"])


def test_a_cache_folder_that_cannot_hold_a_lock_is_still_read(tmp_path, monkeypatch):
    from pipelines.datasets import preparation_lock

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RNNKIT_TFDS_DIR", str(blocker / "tfds"))
    entered = False
    with preparation_lock("spa_eng"):
        entered = True
    assert entered
