"""The image captioning task on Flickr8k: data, model, BLEU evaluation, gallery and serving."""

from __future__ import annotations

import base64
import collections
import dataclasses
import html
import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

# Importing models.captioning registers Captioner, which loading a checkpoint needs.
from app.errors import UserError
from models.captioning import (
    END,
    OOV,
    PAD,
    START,
    Captioner,
    decode_and_resize,
    normalize_caption,
)
from pipelines import flickr8k
from pipelines.config import TrainConfig
from pipelines.tasks import Task

log = logging.getLogger("pipelines.captioning")

# Xu et al. 2015, "Show, Attend and Tell", Table 1, Flickr8k test (full 6k training images,
# an ImageNet-trained encoder): soft and hard attention.
PUBLISHED = {
    "show_attend_tell_soft": {"bleu_1": 0.670, "bleu_2": 0.448, "bleu_3": 0.299, "bleu_4": 0.195},
    "show_attend_tell_hard": {"bleu_1": 0.670, "bleu_2": 0.457, "bleu_3": 0.314, "bleu_4": 0.213},
}


@dataclasses.dataclass
class CaptioningConfig(TrainConfig):
    """Captioning settings on top of the shared ones (validation uses the official dev split).

    Args:
        image_size: encoder input height and width in pixels.
        encoder: keras.applications backbone (models.captioning.ENCODERS).
        encoder_alpha: MobileNet width multiplier (< 1 is smaller and faster).
        encoder_weights: imagenet (downloads), none (train from scratch) or a weights file path.
        encoder_bn_momentum: momentum of the encoder's BatchNormalization moving statistics
            (lower follows a fast-changing encoder more closely).
        embed_dim: word embedding size.
        units: decoder state size.
        cell: decoder cell, lstm or gru.
        attention: attend over the encoder's spatial feature map at every step.
        dropout: dropout on features, embeddings and decoder outputs.
        augment: random flip, zoom, shift and contrast on training images.
        vocab_size: most words kept (most frequent first), besides padding and special tokens.
        min_word_count: words seen fewer times in the training captions become [UNK].
        max_caption_length: words per caption kept for training and generated at most.
        beam_width: 1 decodes greedily, more uses beam search (evaluation and export).
        length_penalty: beam hypotheses are ranked by log-prob / length**length_penalty.
        gallery_size: test images shown in the run dir's gallery.html.
    """

    image_size: int = 128
    encoder: str = "mobilenet_v2"
    encoder_alpha: float = 0.35
    encoder_weights: str = "none"
    encoder_bn_momentum: float = 0.9
    embed_dim: int = 128
    units: int = 256
    cell: str = "lstm"
    attention: bool = True
    dropout: float = 0.3
    augment: bool = True
    vocab_size: int = 5000
    min_word_count: int = 3
    max_caption_length: int = 20
    beam_width: int = 3
    length_penalty: float = 0.7
    gallery_size: int = 16


PROFILES: dict[str, dict[str, Any]] = {
    # About 5 minutes on 2 CPU cores with the 1,000-image mirror.
    "quick": {"epochs": 12, "batch_size": 32, "learning_rate": 2e-3,
              "early_stopping_patience": 3},
    # Bigger encoder input and decoder; meant for the full 8k images or an accelerator.
    "full": {"epochs": 60, "batch_size": 32, "learning_rate": 1e-3,
             "early_stopping_patience": 8, "image_size": 160, "encoder_alpha": 0.5,
             "embed_dim": 256, "units": 512, "min_word_count": 3, "beam_width": 5},
}


def load_split(split: str, limit: int | None = None) -> tf.data.Dataset:
    """One Flickr8k split as {"image": JPEG bytes, "image_id", "captions": [5]}, prepared once.

    Args:
        split: train, validation or test.
        limit: keep only the first `limit` images (deterministic order); None for all.
    """
    builder = flickr8k.prepare()
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
    return ds.take(limit) if limit else ds


def split_captions(split: str, limit: int | None = None) -> list[tuple[str, bytes, list[str]]]:
    """(image id, JPEG bytes, raw captions) of every image of a split, in a fixed order.

    Args:
        split: train, validation or test.
        limit: keep only the first `limit` images; None for all.
    """
    return [(ex["image_id"].decode(), ex["image"], [c.decode() for c in ex["captions"]])
            for ex in load_split(split, limit).as_numpy_iterator()]


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
        references: per image, its normalized reference captions (the same count for all).
    """
    from sacrebleu.metrics import BLEU

    streams = [list(refs) for refs in zip(*references, strict=True)]
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


class CaptioningTask(Task):
    """One image in, a caption out: Flickr8k with a CNN encoder and a recurrent decoder."""

    name: ClassVar[str] = "captioning"
    dataset: ClassVar[str] = "flickr8k"
    export_name: ClassVar[str] = "captioner"
    config_class: ClassVar[type[TrainConfig]] = CaptioningConfig
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES

    def __init__(self) -> None:
        self._train_captions: dict[int | None, list[str]] = {}

    def training_captions(self, config: CaptioningConfig) -> list[str]:
        """Normalized captions of the training images used (vocabulary and baseline source).

        Args:
            config: the task config (max_train_examples picks the images).
        """
        key = config.max_train_examples
        if key not in self._train_captions:
            captions = [c for _, _, caps in split_captions("train", key) for c in caps]
            self._train_captions[key] = normalize(captions)
        return self._train_captions[key]

    def vocabulary(self, config: CaptioningConfig) -> list[str]:
        """The caption vocabulary, built from the training captions only.

        Args:
            config: the task config.
        """
        return build_vocabulary(self.training_captions(config), config.vocab_size,
                                config.min_word_count)

    def _pairs(self, split: str, config: CaptioningConfig, limit: int | None,
               training: bool) -> tf.data.Dataset:
        """Batched ({"image", "caption_in"}, caption_out) for every image of a split."""
        size, length = config.image_size, config.max_caption_length
        vectorize = keras.layers.TextVectorization(
            standardize=None, split="whitespace", output_sequence_length=length + 2,
            vocabulary=self.vocabulary(config))

        def targets(image, captions):
            words = tf.strings.split(normalize_caption(captions))[:, :length]
            text = tf.strings.reduce_join(words, axis=1, separator=" ")
            ids = tf.cast(vectorize(START + " " + text + " " + END), tf.int32)
            return {"image": image, "caption_in": ids[:, :-1]}, ids[:, 1:]

        ds = load_split(split, limit).map(
            lambda ex: (decode_and_resize(ex["image"], size), ex["captions"]),
            num_parallel_calls=tf.data.AUTOTUNE).cache()
        if training:
            ds = ds.shuffle(8192, seed=config.seed, reshuffle_each_iteration=True)
        return (ds.map(targets, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(config.batch_size).prefetch(tf.data.AUTOTUNE))

    def datasets(self, config: CaptioningConfig) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        """Training images (all five captions each) and the official dev split for validation."""
        return (self._pairs("train", config, config.max_train_examples, training=True),
                self._pairs("validation", config, config.max_eval_examples, training=False))

    def build_model(self, config: CaptioningConfig) -> keras.Model:
        """The captioner with the training vocabulary; bad encoder settings are a UserError."""
        try:
            model = Captioner(
                self.vocabulary(config), image_size=config.image_size, encoder=config.encoder,
                encoder_alpha=config.encoder_alpha, encoder_weights=config.encoder_weights,
                encoder_bn_momentum=config.encoder_bn_momentum,
                embed_dim=config.embed_dim, units=config.units, cell=config.cell,
                attention=config.attention, dropout=config.dropout, augment=config.augment,
                max_length=config.max_caption_length, beam_width=config.beam_width,
                length_penalty=config.length_penalty, seed=config.seed, name="captioner")
        except ValueError as err:
            raise UserError(f"cannot build the captioner: {err}",
                            "fix the setting with --set KEY=VALUE (see `rnnkit train "
                            "--help`)") from None
        model.build()
        return model

    def loss(self, config: CaptioningConfig) -> Any:
        """Token cross-entropy that ignores padding."""
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)

    def metrics(self, config: CaptioningConfig) -> list[Any]:
        """Next-token accuracy on real (non-padding) tokens."""
        from models.translation import MaskedTokenAccuracy

        return [MaskedTokenAccuracy()]

    def caption_images(self, model: keras.Model, config: CaptioningConfig,
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

    def evaluate(self, model: keras.Model, config: CaptioningConfig,
                 run_dir: Path) -> dict[str, Any]:
        """BLEU-1..4 on the test images for the model and the frequent-caption baseline."""
        test = split_captions("test", config.max_eval_examples)
        if not test:
            raise UserError("the Flickr8k test split has no images",
                            "put Flickr8k_Dataset.zip with test images into "
                            "RNNKIT_DATA_DIR/flickr8k/ and run `rnnkit data prepare flickr8k`")
        references = [normalize(caps) for _, _, caps in test]
        generated = self.caption_images(model, config, [jpeg for _, jpeg, _ in test])
        baseline = most_frequent_caption(self.training_captions(config))
        model_bleu = bleu_scores(generated, references)
        baseline_bleu = bleu_scores([baseline] * len(test), references)
        run_dir = Path(run_dir)
        gallery = run_dir / "gallery.html"
        write_gallery(gallery, [(i, jpeg, g, caps) for (i, jpeg, caps), g
                                in zip(test[:config.gallery_size], generated, strict=False)])
        with open(run_dir / "test_captions.jsonl", "w", encoding="utf-8") as f:
            for (image_id, _, _), caption in zip(test, generated, strict=True):
                f.write(json.dumps({"image_id": image_id, "caption": caption}) + "\n")
        log.info("BLEU-4 %.4f (baseline %.4f) on %d test images; gallery %s",
                 model_bleu["bleu_4"], baseline_bleu["bleu_4"], len(test), gallery)
        return {
            "test_images": len(test),
            "decoding": "greedy" if config.beam_width == 1 else f"beam {config.beam_width}",
            **model_bleu,
            "baseline": {"caption": baseline, **baseline_bleu},
            "beats_baseline_bleu_4": model_bleu["bleu_4"] > baseline_bleu["bleu_4"],
            "distinct_captions": len(set(generated)),
            "published": PUBLISHED,
            "gallery": str(gallery),
        }

    def serving_signatures(self, model: keras.Model, config: CaptioningConfig,
                           run_dir: Path | None = None) -> dict[str, Any]:
        """serving_default: image_bytes (JPEG/PNG strings [None]) -> caption (strings [None])."""
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serving_default(image_bytes):
            return {"caption": model.caption_bytes(image_bytes, beam_width=config.beam_width)}

        return {"serving_default": serving_default}

    def warmup_requests(self) -> list[Any]:
        """Two real test images as Predict requests, when Flickr8k is prepared (else none)."""
        from serving.export import predict_log

        if not flickr8k.builder().is_prepared():
            return []
        return [predict_log({"image_bytes": [jpeg]}, model_name=self.export_name)
                for _, jpeg, _ in split_captions("test", 2)]
