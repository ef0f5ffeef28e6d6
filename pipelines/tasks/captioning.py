"""Image captioning (one-to-many): the generic `caption` task and its Flickr8k preset.

`caption` trains on a user's file of (image path, caption) rows (`--data captions.csv --images
DIR`); `captioning` is the same task on Flickr8k's official split. By default the encoder is
MobileNetV2 with ImageNet weights, frozen: its feature maps are computed once per image and
cached (pipelines.datasets.feature_cache), so an epoch costs only the decoder. Evaluation reports
corpus BLEU-1..4 and CIDEr-D against all references, beside the frequent-caption baseline, and draws
each word's attention map; the export takes raw image bytes (the encoder is in the graph).
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import functools
import hashlib
import html
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from models.captioning import (
    END,
    MAX_IMAGE_PIXELS,
    OOV,
    PAD,
    START,
    Captioner,
    build_encoder,
    decode_and_resize,
    encoder_features,
    image_size_from_header,
    normalize_caption,
)
from pipelines.config import TrainConfig, data_dir, tfds_dir
from pipelines.datasets import feature_cache, flickr8k
from pipelines.datasets.data_files import (
    DataFilesConfig,
    check_part_exists,
    iter_part,
    named_dataset,
    part_label,
    part_source,
    source_columns,
)
from pipelines.training.run_dir import scored_name
from pipelines.training.task import Task

# Importing models.captioning registers Captioner, which loading a checkpoint needs.
from serving.errors import UserError

log = logging.getLogger("pipelines.tasks.captioning")

# Xu et al. 2015, "Show, Attend and Tell", Table 1, Flickr8k test (full 6k training images,
# an ImageNet-trained encoder): soft and hard attention.
PUBLISHED = {
    "show_attend_tell_soft": {"bleu_1": 0.670, "bleu_2": 0.448, "bleu_3": 0.299, "bleu_4": 0.195},
    "show_attend_tell_hard": {"bleu_1": 0.670, "bleu_2": 0.457, "bleu_3": 0.314, "bleu_4": 0.213},
}


def split_captions(split: str, limit: int | None = None) -> list[tuple[str, bytes, list[str]]]:
    """(image id, JPEG bytes, raw captions) of a Flickr8k split, sorted by image id.

    Sorted by id, the first images are the same whichever subset of the archive is present
    (the old 1,000-image mirror held the first 1,000 ids).

    Args:
        split: train, validation or test.
        limit: keep only the first `limit` images by id; None for all.
    """
    items = sorted((ex["image_id"].decode(), ex["image"], [c.decode() for c in ex["captions"]])
                   for ex in flickr8k.examples(split))
    return items[:limit] if limit else items


# Backbones whose ImageNet weights the offline mirror holds, relative to RNNKIT_DATA_DIR.
MIRRORED_WEIGHTS = {
    ("mobilenet_v2", 1.0): "imagenet/mobilenet_v2_1.0_imagenet_from_int8tflite_no_top.weights.h5",
}


@dataclasses.dataclass
class CaptionConfig(DataFilesConfig):
    """Captioning settings on top of the shared ones.

    Args:
        data: training captions: a .csv/.tsv/.jsonl file (optionally .gz) with an image path
            and a caption per row (an image may have several rows), or a named data set
            (flickr8k).
        validation_data: validation file; without it a seeded validation_fraction of the
            training images is held out (a named data set uses its own validation split).
        test_data: test file for `rnnkit evaluate` (a named data set uses its test split).
        images: the folder the files' image paths are relative to (default: the data file's).
        image_column: the column holding image paths.
        caption_column: the column holding captions.
        image_size: encoder input height and width in pixels.
        encoder: keras.applications backbone (models.captioning.ENCODERS).
        encoder_alpha: MobileNet width multiplier.
        encoder_weights: imagenet (the offline mirror's file when RNNKIT_DATA_DIR has it, else
            Keras downloads it), none (random) or a weights file path.
        encoder_bn_momentum: momentum of the encoder's BatchNormalization statistics when the
            whole encoder trains.
        trainable_encoder_blocks: 0 freezes the encoder (its features are cached), N > 0
            fine-tunes its last N blocks, -1 trains all of it (from scratch with weights none);
            anything but 0 reads the images every epoch.
        cache_features: keep a frozen encoder's feature maps on disk (computed once).
        embed_dim: word embedding size.
        units: decoder state size.
        cell: decoder cell (a key of models.layers.CELLS).
        attention: attend over the encoder's spatial feature map at every step.
        attention_regularization: weight of the doubly stochastic attention penalty.
        normalize_features: standardize each position's features before the decoder.
        residual_attention: add the attention's output to the decoder's (else replace it).
        dropout: dropout on features, embeddings and decoder outputs.
        augment: random flip, zoom, shift and contrast on training images (only when images
            are read, i.e. a trainable encoder).
        vocab_size: most words kept (most frequent first), besides padding and special tokens.
        min_word_count: words seen fewer times in the training captions become [UNK].
        max_caption_length: words per caption kept for training and generated at most.
        captions_per_image: captions of one image trained together (the image is encoded
            once for them); an image with more makes several examples.
        beam_width: 1 decodes greedily, more uses beam search (evaluation and export).
        length_penalty: beam hypotheses are ranked by log-prob / length**length_penalty.
        gallery_size: test images shown in the run dir's gallery.html.
        attention_samples: test images whose attention maps are drawn into the run dir.
        max_skipped_images: largest share of listed images that may be missing or
            undecodable (they are skipped and counted); more is an error.
        max_image_pixels: the export refuses images with more pixels (read from the header,
            before decoding).
    """

    images: str = ""
    image_column: str = "image"
    caption_column: str = "caption"
    image_size: int = 224
    encoder: str = "mobilenet_v2"
    encoder_alpha: float = 1.0
    encoder_weights: str = "imagenet"
    encoder_bn_momentum: float = 0.9
    trainable_encoder_blocks: int = 0
    cache_features: bool = True
    embed_dim: int = 256
    units: int = 512
    cell: str = "lstm"
    attention: bool = True
    attention_regularization: float = 1.0
    normalize_features: bool = True
    residual_attention: bool = True
    dropout: float = 0.3
    augment: bool = False
    vocab_size: int = 10000
    min_word_count: int = 3
    max_caption_length: int = 20
    captions_per_image: int = 5
    beam_width: int = 3
    length_penalty: float = 0.7
    gallery_size: int = 16
    attention_samples: int = 4
    max_skipped_images: float = 0.05
    max_image_pixels: int = MAX_IMAGE_PIXELS

    def validate(self) -> None:
        super().validate()
        self.check_cell()
        self.check_at_least_one("image_size", "embed_dim", "units", "vocab_size",
                                "min_word_count", "max_caption_length", "captions_per_image",
                                "beam_width", "max_image_pixels")
        self.check_rates("dropout")
        self.check_shares("max_skipped_images")


@dataclasses.dataclass
class CaptioningConfig(CaptionConfig):
    """The Flickr8k preset: the same settings, data flickr8k.

    Args:
        data: flickr8k (the official 6000/1000/1000 split), or any caption source.
    """

    data: str = "flickr8k"


PROFILES: dict[str, dict[str, Any]] = {
    # A frozen ImageNet encoder: features are extracted once (2-3 minutes for Flickr8k's 8,091
    # images on 2 cores), then each epoch (about 65 s on 2 quiet cores) trains only the decoder.
    # 3 epochs keep a first run within 8 minutes (BLEU-4 0.175; a 4th epoch gives 0.183).
    "quick": {"epochs": 3, "batch_size": 64, "learning_rate": 2e-3, "lr_decay": 0.7,
              "early_stopping_patience": 2, "embed_dim": 256, "units": 384,
              "beam_width": 3},
    # The same cached features, a wider decoder trained longer, beam 5.
    "full": {"epochs": 10, "batch_size": 64, "learning_rate": 2e-3, "lr_decay": 0.8,
             "early_stopping_patience": 3, "embed_dim": 256, "units": 512, "dropout": 0.4,
             "beam_width": 5},
}


@dataclasses.dataclass
class ImageCaptions:
    """The images of one part of the data with their captions, in a fixed order.

    Args:
        ids: image ids (file names for Flickr8k, paths as written in a user's file).
        readers: per image, a function returning its encoded bytes.
        captions: per image, its raw captions.
        fingerprint: changes when the image set or its files change (feature cache key).
        label: how messages name the part (e.g. "flickr8k (test)").
    """

    ids: list[str]
    readers: list[Callable[[], bytes]]
    captions: list[list[str]]
    fingerprint: str
    label: str

    def take(self, limit: int | None) -> ImageCaptions:
        """The first `limit` images (all for None).

        Args:
            limit: how many images to keep.
        """
        if limit is None:
            return self
        return ImageCaptions(self.ids[:limit], self.readers[:limit], self.captions[:limit],
                             feature_cache.fingerprint(self.ids[:limit], [self.fingerprint]),
                             self.label)


def read_part(config: CaptionConfig, part: str) -> ImageCaptions:
    """The images and captions of one part (train, validation or test) of a config's data.

    A named data set with images of its own (flickr8k) reads them from its prepared data; a
    file's image paths are read from `config.images` (default: the file's folder). Empty
    captions are dropped and counted; missing image files are skipped and named, and more of
    them than `max_skipped_images` is a UserError.

    Args:
        config: the task config.
        part: train, validation or test.
    """
    source, split, _ = part_source(config, part)
    label = part_label(config, part)
    named = named_dataset(source)
    grouped: dict[str, list[str]] = {}
    empty = 0
    image_column, caption_column = source_columns(source, config,
                                                  ("image_column", "caption_column"))
    # Held-out validation goes by image, so all captions of an image fall on one side; the
    # example limits count images here (ImageCaptions.take), not rows.
    unlimited = config.replace(max_train_examples=None)
    for _, row in iter_part(unlimited, part, ("image_column", "caption_column"),
                            key=lambda row: row[image_column]):
        image, caption = row[image_column], row[caption_column]
        if not caption.strip():
            empty += 1
            continue
        grouped.setdefault(image.strip(), []).append(caption)
    if empty:
        log.warning("%s: dropped %d rows with an empty caption", label, empty)
    if not grouped:
        raise UserError(f"{label} has no image with a caption",
                        f"fill the {config.caption_column!r} column, or check --data")
    ids = sorted(grouped)
    if named is not None and named.images is not None:
        stored = named.images(split)
        missing = [i for i in ids if i not in stored]
        readers = [functools.partial(stored.get, i) for i in ids]
        where = ""
        extra = [hashlib.sha256(stored[i]).hexdigest() for i in ids if i in stored]
    else:
        folder = Path(config.images) if config.images else Path(source).parent
        if config.images and not folder.is_dir():
            raise UserError(f"image folder {folder} does not exist",
                            "pass --images DIR, the folder the file's image paths are "
                            "relative to")
        paths = [folder / i for i in ids]
        where = f" from {folder}" + ("" if config.images else " (the data file's folder)")
        missing = [i for i, p in zip(ids, paths, strict=True) if not p.is_file()]
        readers = [p.read_bytes for p in paths]
        extra = [f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths if p.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        if len(missing) > config.max_skipped_images * len(ids):
            raise UserError(f"{label}: {len(missing)} of {len(ids)} listed images are missing"
                            f"{where} ({shown}), more than max_skipped_images="
                            f"{config.max_skipped_images:g} allows",
                            "check --images (the folder the image paths are relative to) and "
                            "the image column, or raise --set max_skipped_images=... to skip "
                            "them")
        log.warning("%s: %d of %d listed images are missing%s and skipped (%s)", label,
                    len(missing), len(ids), where, shown)
        absent = set(missing)
        keep = [k for k, i in enumerate(ids) if i not in absent]
        ids, readers = [ids[k] for k in keep], [readers[k] for k in keep]
    return ImageCaptions(ids, readers, [grouped[i] for i in ids],
                         feature_cache.fingerprint(ids, extra), label)


def resolve_encoder_weights(config: CaptionConfig) -> str:
    """`encoder_weights` as the encoder builder takes it: imagenet becomes the offline
    mirror's file when RNNKIT_DATA_DIR holds one for this encoder and alpha.

    Args:
        config: the task config.
    """
    if config.encoder_weights != "imagenet":
        return config.encoder_weights
    root, relative = data_dir(), MIRRORED_WEIGHTS.get((config.encoder, config.encoder_alpha))
    if root is not None and relative and (root / relative).is_file():
        return str(root / relative)
    return "imagenet"


def _encoder_error(err: Exception) -> UserError:
    """The UserError for an encoder that cannot be built with these settings."""
    offline = ", ".join(f"{name} alpha={alpha:g}" for name, alpha in MIRRORED_WEIGHTS)
    return UserError(f"cannot build the captioner's encoder: {err}",
                     f"the offline mirror has ImageNet weights for {offline} only; fix it with "
                     "--set encoder=... encoder_alpha=... encoder_weights=imagenet|none|PATH")


def _words_and_ids(captions: list[str], vocabulary: list[str], length: int) -> np.ndarray:
    """Captions -> ids [n, length + 2] of `<start> words <end>` (0-padded, cut to length)."""
    vectorize = keras.layers.TextVectorization(
        standardize=None, split="whitespace", output_sequence_length=length + 2,
        vocabulary=vocabulary)
    words = tf.strings.split(normalize_caption(tf.constant(captions, tf.string)))[:, :length]
    text = tf.strings.reduce_join(words, axis=1, separator=" ")
    return vectorize(START + " " + text + " " + END).numpy().astype(np.int32)


def caption_examples(captions: list[list[str]], vocabulary: list[str], length: int,
                     per_image: int) -> tuple[np.ndarray, np.ndarray]:
    """Training examples: (image index [n], caption ids [n, per_image, length + 2]).

    An image's captions are trained together (its features are computed once for them); one
    with more than `per_image` captions makes several examples, one with fewer is padded with
    all-padding captions, which the loss and the attention penalty ignore.

    Args:
        captions: per image, its raw captions.
        vocabulary: the caption vocabulary.
        length: most words per caption.
        per_image: captions per example.
    """
    flat = [c for caps in captions for c in caps]
    ids = _words_and_ids(flat, vocabulary, length)
    images, groups, at = [], [], 0
    for index, caps in enumerate(captions):
        for start in range(0, len(caps), per_image):
            chunk = ids[at + start:at + min(start + per_image, len(caps))]
            pad = np.zeros([per_image - len(chunk), ids.shape[1]], np.int32)
            images.append(index)
            groups.append(np.concatenate([chunk, pad]))
        at += len(caps)
    return np.asarray(images, np.int64), np.stack(groups)


def _too_large(items: ImageCaptions, names: list[str], limit: int) -> str:
    """Which of the named images exceed `limit` pixels (by their header), as `x.jpg is W x H
    pixels`; '' for none: a phone's 48-megapixel photo is not broken, only large."""
    readers = dict(zip(items.ids, items.readers, strict=True))
    large = []
    for name in names:
        data = readers[name]() if name in readers else None
        if data:
            height, width = (int(v) for v in image_size_from_header(tf.constant(data)).numpy())
            if height * width > limit:
                large.append(f"{name} is {width:,} x {height:,} pixels")
    return ", ".join(large)


def decodable(data: bytes) -> bool:
    """Whether encoded image bytes decode as a JPEG, PNG, GIF or BMP image.

    Args:
        data: the file's bytes.
    """
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        return False
    return True


def normalize(texts: list[str]) -> list[str]:
    """Normalize captions exactly as the model's training targets are (lower case, no punctuation).

    Args:
        texts: raw captions.
    """
    return [t.decode() for t in normalize_caption(tf.constant(texts, tf.string)).numpy()]


def build_vocabulary(captions: list[str], vocab_size: int, min_count: int) -> list[str]:
    """Token list by id: padding, [UNK], <start>, <end>, then words by falling frequency.

    Args:
        captions: normalized training captions.
        vocab_size: most words kept.
        min_count: fewest occurrences a word needs.
    """
    counts = collections.Counter(w for c in captions for w in c.split())
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return [PAD, OOV, START, END, *words[:vocab_size]]


def most_frequent_caption(captions: list[str]) -> str:
    """The most frequent normalized caption (ties: alphabetically first), the BLEU baseline.

    Args:
        captions: normalized training captions.
    """
    counts = collections.Counter(captions)
    return min(counts, key=lambda c: (-counts[c], c))


def bleu_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (0..1) of one hypothesis per image against all of its references.

    Uses sacreBLEU with `max_ngram_order` n, no smoothing and whitespace tokens (captions are
    already normalized), which is corpus BLEU as in the captioning literature.

    Args:
        hypotheses: one normalized caption per image.
        references: per image, its normalized reference captions (any count; sacreBLEU takes
            None where an image has fewer than the most).
    """
    from sacrebleu.metrics import BLEU

    most = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references]
               for k in range(most)]
    return {f"bleu_{n}": round(BLEU(max_ngram_order=n, smooth_method="none", tokenize="none")
                               .corpus_score(hypotheses, streams).score / 100.0, 4)
            for n in range(1, 5)}


def write_gallery(path: Path, items: list[tuple[str, bytes, str, list[str]]]) -> None:
    """Write an HTML page showing test images with the generated and the reference captions.

    Args:
        path: the .html file to write.
        items: (image id, JPEG bytes, generated caption, reference captions).
    """
    cards = []
    for image_id, jpeg, generated, references in items:
        refs = "".join(f"<li>{html.escape(r)}</li>" for r in references)
        cards.append(
            f'<figure><img alt="{html.escape(image_id)}" '
            f'src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}">'
            f"<figcaption><b>{html.escape(generated)}</b><ol>{refs}</ol>"
            f"<small>{html.escape(image_id)}</small></figcaption></figure>")
    page = ("<!doctype html><meta charset=utf-8><title>rnnkit captions</title><style>"
            "body{font-family:sans-serif;display:flex;flex-wrap:wrap;gap:12px}"
            "figure{width:280px;margin:0}img{width:280px}ol{padding-left:18px;color:#555}"
            "</style><h1 style='width:100%'>Generated (bold) and reference captions, "
            "test images</h1>" + "".join(cards))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)


def cider_d(hypotheses: list[str], references: list[list[str]]) -> float | None:
    """CIDEr-D (0..10 scale as published) with pycocoevalcap's Cider; None if not installed.

    Document frequencies come from the evaluated images' references, as in coco-caption.

    Args:
        hypotheses: one normalized caption per image.
        references: per image, its normalized reference captions.
    """
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return None
    score, _ = Cider().compute_score({i: refs for i, refs in enumerate(references)},
                                     {i: [h] for i, h in enumerate(hypotheses)})
    return round(float(score), 4)


def plot_attention(path: Path, image: bytes, words: list[str], maps: np.ndarray,
                   caption: str) -> None:
    """Draw an image once per generated word with that word's attention map over it (PNG).

    Args:
        path: the PNG to write.
        image: the encoded image.
        words: the generated words.
        maps: [len(words), h, w] attention weights.
        caption: the caption, as the title.
    """
    from pipelines.training.plots import pyplot, save_figure

    plt = pyplot()

    pixels = tf.io.decode_image(image, channels=3, expand_animations=False).numpy()
    columns = min(len(words), 5) or 1
    rows = 1 + (len(words) - 1) // columns if words else 1
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    height, width = pixels.shape[:2]
    for ax, word, weights in zip(axes.flat, words, maps, strict=False):
        ax.imshow(pixels)
        # A dark veil that lifts where this word's weight is high (each map scaled to its own
        # peak); each grid cell covers its share of the frame, smoothed as in the paper.
        veil = np.zeros([*weights.shape, 4])
        veil[..., 3] = 0.8 * (1.0 - weights / (weights.max() or 1.0))
        ax.imshow(veil, extent=(0, width, height, 0), interpolation="bilinear")
        ax.set_title(word, fontsize=11)
    fig.suptitle(caption, fontsize=11)
    save_figure(fig, path, dpi=80)


class CaptionTask(Task):
    """One image in, a caption out: a CNN encoder and a recurrent decoder with attention.

    The generic `caption` task trains on a user's file of (image path, caption) rows; the
    `captioning` preset on Flickr8k.
    """

    name: ClassVar[str] = "caption"
    dataset: ClassVar[str] = ""
    export_name: ClassVar[str] = "captioner"
    config_class: ClassVar[type[TrainConfig]] = CaptionConfig
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str, int | None], ImageCaptions] = {}
        self._encoders: dict[str, keras.Model] = {}

    def part(self, config: CaptionConfig, part: str, limit: int | None = None) -> ImageCaptions:
        """One part of the data (read once per task instance), its first `limit` images.

        Args:
            config: the task config.
            part: train, validation or test.
            limit: images kept; None for all.
        """
        key = (part, json.dumps([getattr(config, f) for f in (
            "data", "validation_data", "test_data", "images", "image_column",
            "caption_column", "validation_fraction", "seed")]), limit)
        if key not in self._parts:
            self._parts[key] = read_part(config, part).take(limit)
        return self._parts[key]

    def training_captions(self, config: CaptionConfig) -> list[str]:
        """Normalized captions of the training images used (vocabulary and baseline source).

        Args:
            config: the task config (max_train_examples picks the images).
        """
        train = self.part(config, "train", config.max_train_examples)
        return normalize([c for caps in train.captions for c in caps])

    def vocabulary(self, config: CaptionConfig) -> list[str]:
        """The caption vocabulary, built from the training captions only.

        Args:
            config: the task config.
        """
        return build_vocabulary(self.training_captions(config), config.vocab_size,
                                config.min_word_count)

    def encoder(self, config: CaptionConfig) -> keras.Model:
        """The image encoder as the model will have it (for the feature cache).

        Args:
            config: the task config.
        """
        weights = resolve_encoder_weights(config)
        key = json.dumps([config.encoder, config.image_size, config.encoder_alpha, weights,
                          config.seed])
        if key not in self._encoders:
            try:
                self._encoders[key] = build_encoder(
                    config.encoder, config.image_size, config.encoder_alpha, weights,
                    config.encoder_bn_momentum, seed=config.seed)
            except ValueError as err:
                raise _encoder_error(err) from None
        return self._encoders[key]

    def features(self, config: CaptionConfig, part: str, limit: int | None) -> tuple[
            ImageCaptions, feature_cache.FeatureSet]:
        """A part's images and their cached feature maps from the frozen encoder.

        Args:
            config: the task config.
            part: train or validation.
            limit: images kept; None for all.
        """
        items = self.part(config, part, limit)
        encoder = self.encoder(config)
        key = feature_cache.EncoderKey(config.encoder, config.encoder_alpha, config.image_size,
                                       feature_cache.weights_digest(encoder))
        extract = tf.function(lambda pixels: encoder_features(encoder, config.encoder, pixels))
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", items.label).strip("_")
        limit = config.max_image_pixels

        def decode(image: tf.Tensor, size: int) -> tf.Tensor:
            return decode_and_resize(image, size, limit)

        # Another pixel limit may keep other images: its own cache (the default's name stays).
        name = f"{slug}-{items.fingerprint[:12]}" + (
            "" if limit == MAX_IMAGE_PIXELS else f"-max{limit}")
        try:
            cached = feature_cache.cached_features(
                tfds_dir() / "features", key, name,
                list(zip(items.ids, items.readers, strict=True)), extract, decode,
                items.fingerprint, max_skipped_fraction=config.max_skipped_images)
        except feature_cache.ImageDecodeError as err:
            large = _too_large(items, err.names, limit)
            raise UserError(
                f"{items.label}: {err}" + (f"; {large}, more than max_image_pixels={limit:,}"
                                           if large else ""),
                "remove or replace the broken images" + (
                    f" (or raise --set max_image_pixels={2 * limit} for the large ones)"
                    if large else "") + ", or raise --set max_skipped_images=...") from None
        return items, cached

    def _batches(self, config: CaptionConfig, part: str, limit: int | None,
                 training: bool) -> tf.data.Dataset:
        """Batched ({"features" or "image", "caption_in"}, caption_out) of one part."""
        vocabulary = self.vocabulary(config)
        frozen = config.trainable_encoder_blocks == 0 and config.cache_features
        if frozen:
            items, cached = self.features(config, part, limit)
            rows = cached.rows()
            keep = [k for k, i in enumerate(items.ids) if i in rows]
            image_rows = np.asarray([rows[items.ids[k]] for k in keep], np.int64)
        else:
            items = self.part(config, part, limit)
            keep = list(range(len(items.ids)))
        index, ids = caption_examples([items.captions[k] for k in keep], vocabulary,
                                      config.max_caption_length, config.captions_per_image)
        ds = tf.data.Dataset.from_tensor_slices((index, ids))
        if training:
            ds = ds.shuffle(len(index), seed=config.seed, reshuffle_each_iteration=True)
        ds = ds.batch(config.batch_size)
        if frozen:
            maps = cached.features
            shape = [None, *maps.shape[1:]]

            def inputs(batch_index, batch_ids):
                # The memory-mapped cache is read per batch: only the rows the batch needs.
                found = tf.numpy_function(lambda i: np.asarray(maps[image_rows[i]]),
                                          [batch_index], tf.float16)
                return {"features": tf.ensure_shape(found, shape),
                        "caption_in": batch_ids[:, :, :-1]}, batch_ids[:, :, 1:]
        else:
            readers = [items.readers[k] for k in keep]
            size = config.image_size

            def read(batch_index):
                return np.asarray([readers[i]() for i in batch_index], dtype=object)

            def inputs(batch_index, batch_ids):
                data = tf.numpy_function(read, [batch_index], tf.string)
                pixels = tf.map_fn(lambda b: decode_and_resize(b, size, config.max_image_pixels),
                                   data,
                                   fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
                return {"image": pixels, "caption_in": batch_ids[:, :, :-1]}, batch_ids[:, :, 1:]
        return ds.map(inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def datasets(self, config: CaptionConfig) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        """Training images (their captions together) and the validation part."""
        config.validate()
        check_part_exists(config, "test", ("image_column", "caption_column"))
        self.encoder(config)  # a weights file that does not fit fails before data is read
        return (self._batches(config, "train", config.max_train_examples, training=True),
                self._batches(config, "validation", config.max_eval_examples, training=False))

    def build_model(self, config: CaptionConfig) -> keras.Model:
        """The captioner with the training vocabulary; bad encoder settings are a UserError."""
        config.validate()
        try:
            model = Captioner(
                self.vocabulary(config), image_size=config.image_size, encoder=config.encoder,
                encoder_alpha=config.encoder_alpha,
                encoder_weights=resolve_encoder_weights(config),
                encoder_bn_momentum=config.encoder_bn_momentum,
                trainable_encoder_blocks=config.trainable_encoder_blocks,
                embed_dim=config.embed_dim, units=config.units, cell=config.cell,
                attention=config.attention,
                attention_regularization=config.attention_regularization,
                normalize_features=config.normalize_features,
                residual_attention=config.residual_attention,
                max_image_pixels=config.max_image_pixels,
                dropout=config.dropout, augment=config.augment,
                max_length=config.max_caption_length, beam_width=config.beam_width,
                length_penalty=config.length_penalty, seed=config.seed, name="captioner")
        except ValueError as err:
            raise _encoder_error(err) from None
        model.build()
        return model

    def loss(self, config: CaptionConfig) -> Any:
        """Token cross-entropy that ignores padding."""
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)

    def metrics(self, config: CaptionConfig) -> list[Any]:
        """Next-token accuracy on real (non-padding) tokens."""
        from models.translation import MaskedTokenAccuracy

        return [MaskedTokenAccuracy()]

    def caption_images(self, model: keras.Model, config: CaptionConfig,
                       images: list[bytes]) -> list[str]:
        """Caption encoded images with the model, in batches, through the serving path.

        Args:
            model: a Captioner.
            config: the task config (batch_size, beam_width).
            images: encoded JPEG/PNG images.
        """
        run = tf.function(lambda b: model.caption_bytes(b, beam_width=config.beam_width))
        out: list[str] = []
        for start in range(0, len(images), config.batch_size):
            batch = tf.constant(images[start:start + config.batch_size])
            out += [c.decode() for c in run(batch).numpy()]
        return out

    def test_images(self, config: CaptionConfig) -> tuple[list[str], list[bytes], list[list[str]]]:
        """(ids, image bytes, raw captions) of the test images that decode; others counted.

        Args:
            config: the task config (test_data or the named data set's test split).
        """
        test = self.part(config, "test", config.max_eval_examples)
        ids, images, captions, broken = [], [], [], []
        for image_id, read, caps in zip(test.ids, test.readers, test.captions, strict=True):
            data = read()
            if data is None or not decodable(data):
                broken.append(image_id)
                continue
            ids.append(image_id)
            images.append(data)
            captions.append(caps)
        if broken:
            log.warning("%s: %d test images do not decode and are skipped (%s)", test.label,
                        len(broken), ", ".join(broken[:5]))
        if not ids:
            raise UserError(f"{test.label} has no image that decodes",
                            "pass a test file whose image column names JPEG/PNG files")
        return ids, images, captions

    def baseline_caption(self, config: CaptionConfig, run_dir: Path) -> str:
        """The frequent-caption baseline of the run's own training captions.

        `rnnkit evaluate --data test.csv --image-column ... --images ...` describes the test
        file; the training file is read with the columns and folder the run trained with.

        Args:
            config: the evaluation's config.
            run_dir: the run (its config.json).
        """
        return most_frequent_caption(self.training_captions(self.trained_config(config,
                                                                                 run_dir)))

    def evaluate(self, model: keras.Model, config: CaptionConfig,
                 run_dir: Path) -> dict[str, Any]:
        """BLEU-1..4 and CIDEr-D on the test images for the model and the frequent caption."""
        ids, images, raw = self.test_images(config)
        references = [normalize(caps) for caps in raw]
        generated = self.caption_images(model, config, images)
        baseline = self.baseline_caption(config, Path(run_dir))
        model_scores = {**bleu_scores(generated, references),
                        "cider_d": cider_d(generated, references)}
        baseline_scores = {**bleu_scores([baseline] * len(ids), references),
                           "cider_d": cider_d([baseline] * len(ids), references)}
        run_dir = Path(run_dir)
        # Scoring another file (`evaluate --data`) keeps the test split's artifacts.
        gallery = run_dir / scored_name("gallery.html", config.test_data)
        write_gallery(gallery, list(zip(ids, images, generated, raw, strict=True))[
            :config.gallery_size])
        captions_file = run_dir / scored_name("test_captions.jsonl", config.test_data)
        with open(captions_file, "w", encoding="utf-8") as f:
            for image_id, caption in zip(ids, generated, strict=True):
                f.write(json.dumps({"image_id": image_id, "caption": caption}) + "\n")
        maps = self.write_attention_maps(model, config, run_dir, ids, images)
        distinct = len(set(generated))
        log.info("BLEU-4 %.4f (baseline %.4f), %d distinct captions on %d test images; "
                 "gallery %s", model_scores["bleu_4"], baseline_scores["bleu_4"], distinct,
                 len(ids), gallery)
        return {
            "test_images": len(ids),
            "decoding": "greedy" if config.beam_width == 1 else f"beam {config.beam_width}",
            **model_scores,
            "baseline": {"caption": baseline, **baseline_scores},
            "beats_baseline_bleu_4": model_scores["bleu_4"] > baseline_scores["bleu_4"],
            "distinct_captions": distinct,
            "distinct_fraction": round(distinct / len(ids), 4),
            "metrics": "corpus BLEU-1..4: sacreBLEU (no smoothing, tokenize none) on lower-cased "
                       "captions without punctuation against all references; CIDEr-D: "
                       "pycocoevalcap's Cider",
            "encoder": {"name": config.encoder, "alpha": config.encoder_alpha,
                        "weights": config.encoder_weights,
                        "trainable_blocks": config.trainable_encoder_blocks},
            "published": PUBLISHED,
            "gallery": str(gallery),
            "attention_maps": [str(p) for p in maps],
        }

    def write_attention_maps(self, model: keras.Model, config: CaptionConfig, run_dir: Path,
                             ids: list[str], images: list[bytes]) -> list[Path]:
        """Draw where each word looked for the first `attention_samples` test images.

        Args:
            model: a Captioner with attention.
            config: the task config.
            run_dir: the run directory (PNGs go to attention/, attention-<stem>/ for another
                scored file).
            ids: test image ids.
            images: their encoded bytes.
        """
        count = min(config.attention_samples, len(images))
        if not model.use_attention or count == 0:
            return []
        out = model.caption_with_attention(tf.constant(images[:count]),
                                           beam_width=config.beam_width)
        folder = Path(run_dir) / scored_name("attention", config.test_data)
        folder.mkdir(exist_ok=True)
        paths = []
        for k in range(count):
            words = [w.decode() for w in out["output_tokens"][k].numpy() if w]
            path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', ids[k])}.png"
            plot_attention(path, images[k], words, out["attention"][k].numpy()[:len(words)],
                           out["caption"][k].numpy().decode())
            paths.append(path)
        return paths

    def serving_signatures(self, model: keras.Model, config: CaptionConfig,
                           run_dir: Path | None = None) -> dict[str, Any]:
        """serving_default: image_bytes -> caption and output_text (strings [None]);
        caption_with_attention adds each word and its attention map."""
        beam = config.beam_width

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serving_default(image_bytes):
            caption = model.caption_bytes(image_bytes, beam_width=beam)
            return {"caption": caption, "output_text": tf.identity(caption)}

        signatures = {"serving_default": serving_default}
        if model.use_attention:
            @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
            def caption_with_attention(image_bytes):
                return model.caption_with_attention(image_bytes, beam_width=beam)

            signatures["caption_with_attention"] = caption_with_attention
        return signatures

    def export_metadata(self, config: CaptionConfig, run_dir: Path | None) -> dict[str, Any]:
        """The encoder input size and the attention grid the page draws maps on."""
        return {"image_size": config.image_size, "attention": config.attention,
                "max_caption_length": config.max_caption_length,
                "max_image_pixels": config.max_image_pixels}

    def warmup_requests(self) -> list[Any]:
        """Two real test images as Predict requests, when Flickr8k is prepared (else none)."""
        from serving.export import predict_log

        if not flickr8k.builder().is_prepared():
            return []
        return [predict_log({"image_bytes": [jpeg]}, model_name=self.export_name)
                for _, jpeg, _ in split_captions("test", 2)]


class CaptioningTask(CaptionTask):
    """The Flickr8k preset of `caption` (official 6000/1000/1000 split)."""

    name: ClassVar[str] = "captioning"
    dataset: ClassVar[str] = "flickr8k"
    config_class: ClassVar[type[TrainConfig]] = CaptioningConfig
