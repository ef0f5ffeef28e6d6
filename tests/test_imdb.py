"""IMDB through TFDS: offline preparation, the seeded validation split, length-bucketed batches."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipelines.datasets import imdb
from serving.errors import UserError


@pytest.fixture(scope="module")
def reviews(shared_data, tfds_dir):
    """IMDB prepared once into the session's TFDS dir."""
    return imdb.prepare()


def _texts(data: tf.data.Dataset) -> list[bytes]:
    return [text for text, _ in data.as_numpy_iterator()]


def test_prepared_splits_are_the_real_ones(reviews, tfds_dir):
    splits = reviews.info.splits
    assert splits["train"].num_examples == 25_000
    assert splits["test"].num_examples == 25_000
    assert str(reviews.data_dir).startswith(str(tfds_dir))
    # Prepared once: a second call finds the data and returns the builder at once.
    assert imdb.prepare().data_dir == reviews.data_dir
    text, label = next(iter(imdb.load_test(1)))
    assert text.dtype == tf.string and len(text.numpy()) > 20
    assert label.numpy().tolist() in ([0.0], [1.0])


def test_validation_is_a_seeded_disjoint_tenth_of_train(reviews):
    train, val = imdb.train_validation(0.1, seed=42)
    val_texts = set(_texts(val))
    assert 2_300 < len(val_texts) < 2_700
    train_sample = _texts(train.take(3_000))
    assert not val_texts.intersection(train_sample)
    # The same seed picks the same reviews; another seed picks others.
    first = _texts(imdb.train_validation(0.1, seed=42, max_train_examples=2_000)[1])
    assert set(first) <= val_texts
    assert _texts(imdb.train_validation(0.1, seed=42, max_train_examples=2_000)[1]) == first
    other = set(_texts(imdb.train_validation(0.1, seed=7, max_train_examples=2_000)[1]))
    assert len(other & set(first)) < 0.3 * len(first)


def test_max_train_examples_limits_both_parts(reviews):
    train, val = imdb.train_validation(0.1, seed=1, max_train_examples=900)
    assert len(_texts(train)) == 900
    assert len(_texts(val)) == 100
    labels = np.array([label for _, label in train.as_numpy_iterator()]).ravel()
    assert 0.35 < labels.mean() < 0.65  # TFDS stores the split shuffled: both classes


def test_length_buckets_waste_less_padding(reviews):
    train, _ = imdb.train_validation(0.1, seed=3, max_train_examples=2_000)

    def padding_share(batches: tf.data.Dataset) -> float:
        padded = real = 0
        for text, _ in batches:
            lengths = np.minimum(tf.strings.split(text).row_lengths().numpy(), 200)
            padded += lengths.max() * len(lengths)
            real += lengths.sum()
        return 1 - real / padded

    bucketed = padding_share(imdb.batches(train, 32, max_length=200, shuffle_seed=3))
    plain = padding_share(train.shuffle(2_000, seed=3).batch(32))
    assert bucketed < 0.5 * plain, (bucketed, plain)
    sizes = [len(text) for text, _ in imdb.batches(train, 32, max_length=200, shuffle_seed=3)]
    assert sum(sizes) == 2_000 and max(sizes) == 32


def test_missing_archive_names_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RNNKIT_TFDS_DIR", str(tmp_path / "tfds"))
    with pytest.raises(UserError) as raised:
        imdb.prepare()
    message = str(raised.value)
    assert str(tmp_path / "data" / "imdb" / "aclImdb_v1.tar.gz") in message
    assert "RNNKIT_DATA_DIR" in message


def test_corrupt_archive_names_the_file_and_the_fix(tmp_path, monkeypatch):
    archive = tmp_path / "data" / "imdb" / "aclImdb_v1.tar.gz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"\x1f\x8b\x08\x00 this is not a tar.gz archive" * 100)
    monkeypatch.setenv("RNNKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RNNKIT_TFDS_DIR", str(tmp_path / "tfds"))
    with pytest.raises(UserError) as raised:
        imdb.prepare()
    assert str(archive) in str(raised.value)
    assert "intact copy" in str(raised.value)
