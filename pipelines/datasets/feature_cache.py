"""A frozen image encoder's feature maps, computed once per image set and kept on disk.

Training a caption decoder on top of a frozen ImageNet encoder spends almost all of its time in
the encoder when images are read every epoch. The encoder's output for an image never changes,
so `cached_features` runs it once per image and stores the maps (float16) beside the prepared
data:

    RNNKIT_TFDS_DIR/features/<encoder key>/<image set>/
        features.npy   [images, h, w, channels] float16, read as a memory map
        meta.json      ids in row order, skipped images, the image set's fingerprint

The encoder key names the backbone, its width, the input size and a digest of the encoder's
actual weights, so another weights file, size or backbone gets its own folder and a stale cache is
never read. A cache is written into a temporary folder and renamed into place only when complete:
a killed run leaves no half-written cache behind, and a cache that does not check out (a damaged
`features.npy` or `meta.json`) is logged and rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger("pipelines.datasets.feature_cache")

FEATURES, META = "features.npy", "meta.json"
# Undecodable images named in the log (the count is always given).
NAMED_FAILURES = 5
# A progress line every this many images while the encoder runs.
PROGRESS_EVERY = 1000


def weights_digest(model: keras.Model) -> str:
    """SHA-256 over every weight of a model, in order: the identity of a frozen encoder.

    Args:
        model: a built Keras model.
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(str(value.shape).encode() + value.dtype.str.encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class EncoderKey:
    """What a cached feature map depends on besides the image.

    Args:
        encoder: backbone name (e.g. mobilenet_v2).
        alpha: width multiplier.
        image_size: input height and width in pixels.
        digest: `weights_digest` of the encoder.
    """

    encoder: str
    alpha: float
    image_size: int
    digest: str

    def folder(self) -> str:
        """The cache folder name of this encoder."""
        return f"{self.encoder}-a{self.alpha:g}-{self.image_size}px-{self.digest[:16]}"


@dataclasses.dataclass
class FeatureSet:
    """Cached feature maps of one image set.

    Args:
        ids: image ids in row order (only the images that decoded).
        features: [len(ids), h, w, channels] float16, memory-mapped.
        skipped: ids of images that could not be decoded.
        path: the cache folder.
    """

    ids: list[str]
    features: np.ndarray
    skipped: list[str]
    path: Path

    def rows(self) -> dict[str, int]:
        """Image id -> row of `features`."""
        return {image_id: row for row, image_id in enumerate(self.ids)}


def fingerprint(ids: Iterable[str], extra: Iterable[str] = ()) -> str:
    """A short digest that changes when the image set changes.

    Args:
        ids: the image ids in order.
        extra: anything else the images depend on (file sizes, archive digests).
    """
    digest = hashlib.sha256()
    for part in (*ids, "\0", *extra):
        digest.update(part.encode() + b"\n")
    return digest.hexdigest()[:32]


def _load(folder: Path, expected_fingerprint: str) -> FeatureSet | None:
    """The cache in `folder` if it is complete and for this image set; None to (re)build."""
    meta_path, features_path = folder / META, folder / FEATURES
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        features = np.load(features_path, mmap_mode="r")
        if meta["fingerprint"] != expected_fingerprint:
            log.info("feature cache %s is for another image set; rebuilding it", folder)
            return None
        if features.shape[0] != len(meta["ids"]) or list(features.shape[1:]) != meta["shape"]:
            raise ValueError(f"features.npy holds {features.shape}, meta.json says "
                             f"{len(meta['ids'])} x {meta['shape']}")
        return FeatureSet(list(meta["ids"]), features, list(meta["skipped"]), folder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("feature cache %s is damaged (%s); rebuilding it", folder, err)
        return None


def _decoded(images: Sequence[tuple[str, Callable[[], bytes]]], image_size: int,
             decode: Callable[[tf.Tensor, int], tf.Tensor]) -> tf.data.Dataset:
    """(row index, pixels) of every image that decodes; the others are dropped."""
    def generate():
        for index, (_, read) in enumerate(images):
            try:
                data = read()
            except OSError as err:
                log.warning("cannot read image %s: %s", images[index][0], err)
                continue
            yield index, data

    ds = tf.data.Dataset.from_generator(generate, output_signature=(
        tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)))
    # An image that fails to decode raises inside map; ignore_errors drops just that element.
    return (ds.map(lambda i, data: (i, decode(data, image_size)),
                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .ignore_errors(log_warning=False))


def cached_features(root: Path, key: EncoderKey, name: str,
                    images: Sequence[tuple[str, Callable[[], bytes]]],
                    extract: Callable[[tf.Tensor], tf.Tensor],
                    decode: Callable[[tf.Tensor, int], tf.Tensor],
                    image_fingerprint: str, batch_size: int = 32,
                    max_skipped_fraction: float = 0.05) -> FeatureSet:
    """The encoder's feature maps of `images`, from the cache or computed once and cached.

    Args:
        root: the cache root (RNNKIT_TFDS_DIR/features).
        key: the encoder's identity.
        name: the image set's folder name (e.g. flickr8k-train).
        images: (image id, a function returning the encoded image) in order.
        extract: pixels [batch, size, size, 3] uint8 -> feature maps [batch, h, w, channels].
        decode: (encoded image scalar, size) -> pixels [size, size, 3] uint8, as served.
        image_fingerprint: `fingerprint` of the image set; a cache with another is rebuilt.
        batch_size: images per encoder call.
        max_skipped_fraction: more undecodable images than this share is an error.
    """
    folder = root / key.folder() / name
    cached = _load(folder, image_fingerprint)
    if cached is not None:
        return cached
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        built = _build(tmp, images, key, extract, decode, image_fingerprint, batch_size)
        skipped = len(built["skipped"])
        if skipped:
            shown = ", ".join(built["skipped"][:NAMED_FAILURES])
            log.warning("%d of %d images could not be decoded and are skipped (%s%s)", skipped,
                        len(images), shown, ", ..." if skipped > NAMED_FAILURES else "")
        if skipped > max_skipped_fraction * len(images) or not built["ids"]:
            raise ImageDecodeError(skipped, len(images), built["skipped"][:NAMED_FAILURES])
        if folder.exists():  # a damaged or stale cache: replace it
            stale = folder.parent / f".{name}.stale-{uuid.uuid4().hex[:8]}"
            folder.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached %s features of %d images in %s", key.encoder, len(built["ids"]), folder)
    result = _load(folder, image_fingerprint)
    assert result is not None, folder  # just written and renamed into place
    return result


class ImageDecodeError(ValueError):
    """Too many images of a set could not be decoded."""

    def __init__(self, skipped: int, total: int, names: list[str]):
        self.skipped, self.total, self.names = skipped, total, names
        super().__init__(f"{skipped} of {total} images could not be read or decoded "
                         f"(first: {', '.join(names)})")


def _build(tmp: Path, images: Sequence[tuple[str, Callable[[], bytes]]], key: EncoderKey,
           extract: Callable[[tf.Tensor], tf.Tensor],
           decode: Callable[[tf.Tensor, int], tf.Tensor], image_fingerprint: str,
           batch_size: int) -> dict:
    """Run the encoder over every image into tmp/features.npy, then write tmp/meta.json."""
    rows: list[int] = []
    out = None
    capacity = len(images)
    started = time.monotonic()
    for indices, pixels in _decoded(images, key.image_size, decode).batch(batch_size):
        maps = extract(pixels).numpy()
        if len(rows) // PROGRESS_EVERY != (len(rows) + len(maps)) // PROGRESS_EVERY:
            log.info("%s features: %d of %d images (%.0f images/s)", key.encoder,
                     len(rows) + len(maps), capacity,
                     (len(rows) + len(maps)) / (time.monotonic() - started))
        if out is None:
            out = np.lib.format.open_memmap(tmp / FEATURES, mode="w+", dtype=np.float16,
                                            shape=(capacity, *maps.shape[1:]))
        out[len(rows):len(rows) + len(maps)] = maps.astype(np.float16)
        rows.extend(int(i) for i in indices.numpy())
    kept = set(rows)
    skipped = [image_id for i, (image_id, _) in enumerate(images) if i not in kept]
    shape: list[int] = []
    if out is not None:
        shape = list(out.shape[1:])
        out.flush()
        del out
        if len(rows) < capacity:  # drop the rows of skipped images from the file
            full = np.load(tmp / FEATURES, mmap_mode="r")
            np.save(tmp / "trimmed.npy", full[:len(rows)])
            del full
            (tmp / "trimmed.npy").replace(tmp / FEATURES)
    meta = {"ids": [images[i][0] for i in rows], "skipped": skipped, "shape": shape,
            "fingerprint": image_fingerprint, "encoder": dataclasses.asdict(key)}
    # meta.json last: its presence marks a complete cache.
    (tmp / META).write_text(json.dumps(meta), encoding="utf-8")
    return meta
