"""IMDB movie reviews through tensorflow-datasets, and their tf.data input pipelines.

When `RNNKIT_DATA_DIR/imdb/aclImdb_v1.tar.gz` exists (a rebuilt mirror of Stanford's archive,
hence its own checksum) TFDS reads it through `manual_dir`; otherwise TFDS downloads as usual.
Either way the prepared data lands once in pipelines.config.tfds_dir().
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config import data_dir, tfds_dir
from pipelines.datasets import downloads, preparation_lock
from serving.errors import DataUnavailable, UserError

if TYPE_CHECKING:
    import tensorflow as tf
    import tensorflow_datasets as tfds

log = logging.getLogger("pipelines.datasets.imdb")

DATASET = "imdb_reviews/plain_text"
URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ARCHIVE = "aclImdb_v1.tar.gz"
MIRROR_FOLDER = "imdb"
LABELS = ("negative", "positive")  # index = TFDS label (0 neg, 1 pos)
_HASH_BUCKETS = 10_000
SHUFFLE_BUFFER = 100_000


def archive_path() -> Path | None:
    """Where the offline archive would be (`RNNKIT_DATA_DIR/imdb/aclImdb_v1.tar.gz`), or None."""
    root = data_dir()
    return root / MIRROR_FOLDER / ARCHIVE if root else None


def builder() -> tfds.core.DatasetBuilder:
    """The `imdb_reviews/plain_text` builder on the project's TFDS cache."""
    import tensorflow_datasets as tfds

    if not sys.stderr.isatty():
        tfds.disable_progress_bar()  # progress bars flood logs and CI output
    return tfds.builder(DATASET, data_dir=str(tfds_dir()))


def prepare() -> tfds.core.DatasetBuilder:
    """Prepare IMDB into the TFDS cache once (later calls return at once); returns the builder."""
    with preparation_lock("imdb"):  # the builder is made inside: it reads what is on disk
        return _prepare()


def _prepare() -> tfds.core.DatasetBuilder:
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums

    reviews = builder()
    if reviews.is_prepared():
        return reviews
    archive = archive_path()
    if archive is not None and archive.is_file():
        log.info("preparing IMDB from %s into %s", archive, tfds_dir())
        # The mirror is a rebuilt archive: TFDS must be told its checksum instead of Stanford's.
        reviews.url_infos[URL] = checksums.compute_url_info(archive)
        config = tfds.download.DownloadConfig(manual_dir=str(archive.parent))
        try:
            with contextlib.redirect_stdout(sys.stderr):  # TFDS prints; stdout is for results
                reviews.download_and_prepare(download_config=config)
        except Exception as err:  # TFDS raises many types for a damaged archive
            raise UserError(f"cannot read the IMDB archive {archive} ({type(err).__name__}: "
                            f"{err})", f"replace it with an intact copy of {URL}") from None
        return reviews
    missing = f"{archive} does not exist and " if archive else ""
    offline = DataUnavailable(f"cannot get IMDB: {missing}{URL} cannot be downloaded",
                        f"connect to the internet, or put {ARCHIVE} into a folder "
                        f"<dir>/{MIRROR_FOLDER}/ and set RNNKIT_DATA_DIR=<dir>")
    if not downloads.reachable(URL):
        raise offline  # TFDS would retry for minutes before giving up
    log.info("downloading IMDB from %s into %s", URL, tfds_dir())
    try:
        with contextlib.redirect_stdout(sys.stderr):
            reviews.download_and_prepare()
    except Exception as err:  # network errors surface as several exception types
        log.debug("download failed: %r", err)
        raise offline from None
    return reviews


def _supervised(split: str) -> tf.data.Dataset:
    """(text, label) pairs of a prepared split, label float32 of shape [1]."""
    import tensorflow as tf

    reviews = prepare()
    data = reviews.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    return data.map(lambda text, label: (text, tf.cast(label, tf.float32)[None]),
                    num_parallel_calls=tf.data.AUTOTUNE)


def _in_validation(text: tf.Tensor, fraction: float, seed: int) -> tf.Tensor:
    """Whether a review belongs to the validation part: a keyed hash of its text, so seeded."""
    import tensorflow as tf

    bucket = tf.strings.to_hash_bucket_strong(text, _HASH_BUCKETS, key=[seed, 0x1DB])
    return bucket < round(fraction * _HASH_BUCKETS)


def train_validation(validation_fraction: float, seed: int, max_train_examples: int | None = None,
                     ) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The training split divided into train and validation parts, unbatched (text, label).

    Args:
        validation_fraction: share of the 25k training reviews held out, chosen by a seeded hash.
        seed: the hash key; the same seed gives the same division.
        max_train_examples: keep only this many training reviews (and validation reviews in
            proportion); None keeps all.
    """
    if not 0 < validation_fraction < 1:
        raise UserError(f"validation_fraction={validation_fraction} must be between 0 and 1",
                        "use e.g. --set validation_fraction=0.1")
    if max_train_examples is not None and max_train_examples < 1:
        raise UserError(f"max_train_examples={max_train_examples} leaves no training reviews",
                        "use e.g. --set max_train_examples=2000, or leave it unset for all")
    reviews = _supervised("train")
    train = reviews.filter(lambda t, _: ~_in_validation(t, validation_fraction, seed))
    val = reviews.filter(lambda t, _: _in_validation(t, validation_fraction, seed))
    if max_train_examples is not None:
        train = train.take(max_train_examples)
        ratio = validation_fraction / (1 - validation_fraction)
        val = val.take(max(1, math.ceil(max_train_examples * ratio)))
    return train, val


def load_test(max_examples: int | None = None) -> tf.data.Dataset:
    """The 25k test reviews, unbatched (text, label); only for final evaluation.

    Args:
        max_examples: keep only the first this many (the split is stored shuffled); None for all.
    """
    data = _supervised("test")
    return data.take(max_examples) if max_examples is not None else data


def unlabelled_texts(max_examples: int | None = None) -> tf.data.Dataset:
    """The 50k unlabelled reviews (TFDS split `unsupervised`) in batches of strings.

    Args:
        max_examples: keep only the first this many; None for all.
    """
    import tensorflow as tf

    data = prepare().as_dataset(split="unsupervised", shuffle_files=False)
    texts = data.map(lambda example: example["text"], num_parallel_calls=tf.data.AUTOTUNE)
    if max_examples is not None:
        texts = texts.take(max_examples)
    return texts.batch(512).prefetch(tf.data.AUTOTUNE)


def word_count(text: tf.Tensor) -> tf.Tensor:
    """Whitespace-separated words of a review, the length used to bucket batches."""
    import tensorflow as tf

    return tf.size(tf.strings.split(text), out_type=tf.int32)


def batches(data: tf.data.Dataset, batch_size: int, max_length: int | None = None,
            shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Cache, optionally shuffle, and batch reviews of similar length together, prefetched.

    Args:
        data: unbatched (text, label) pairs.
        batch_size: reviews per batch.
        max_length: tokens the model keeps; reviews longer than this share the last bucket.
            None buckets up to 800 words.
        shuffle_seed: shuffle every epoch with this seed; None keeps the order (evaluation).
    """
    import tensorflow as tf

    data = data.cache()
    if shuffle_seed is not None:
        # Holds every review (75k with self-training's unlabelled ones; about 100 MB of text), so
        # the order is random however the data was put together.
        data = data.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)
    top = max_length or 800
    # Batches of similar length waste little padding; the model truncates at max_length.
    boundaries = sorted({max(2, int(top * f)) for f in (0.2, 0.35, 0.5, 0.65, 0.8, 1.0)})
    data = data.bucket_by_sequence_length(
        element_length_func=lambda text, _: word_count(text),
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        pad_to_bucket_boundary=False,
        drop_remainder=False,
    )
    return data.prefetch(tf.data.AUTOTUNE)


def training_texts(train: tf.data.Dataset) -> tf.data.Dataset:
    """The training reviews' texts in batches, for adapting TextVectorization (never test data).

    Args:
        train: unbatched (text, label) training pairs.
    """
    import tensorflow as tf

    return train.map(lambda text, _: text).batch(512).prefetch(tf.data.AUTOTUNE)


def named_dataset() -> Any:
    """The `imdb` entry of pipelines.datasets.data_files.NAMED_DATASETS: `classify --data imdb`
    reads the reviews as {"text", "label"} rows (label `negative` or `positive`), like a user's
    CSV."""
    from pipelines.datasets.data_files import NamedDataset

    def rows(split: str, columns: Any = ("text", "label")) -> Any:
        unknown = [c for c in columns if c not in ("text", "label")]
        if unknown:
            raise UserError(f"data set imdb has no column {unknown[0]!r}; its columns are "
                            "'text', 'label'", "drop --text-column/--label-column for imdb")
        data = prepare().as_dataset(split=split, shuffle_files=False)
        for number, example in enumerate(data.as_numpy_iterator(), start=1):
            row = {"text": example["text"].decode("utf-8"),
                   "label": LABELS[int(example["label"])]}
            yield number, {c: row[c] for c in columns}

    return NamedDataset(name="imdb", kind="classify",
                        columns={"text_column": "text", "label_column": "label"},
                        splits=("train", "test"), rows=rows,
                        description="IMDB movie reviews (25k / 25k), negative or positive")
