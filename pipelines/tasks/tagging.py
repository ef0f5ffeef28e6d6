"""`tag`: tokens -> one tag per token (POS, NER, chunks) from CoNLL, CoNLL-U or JSONL files, or a
named data set such as `ud_en_ewt`.

Sentences stream from the file (pipelines.datasets.data_files.iter_tagged); one scan of the training
part counts words, characters and tags (the vocabularies and the tag set, in order of first
appearance) and rejects what cannot train; tf.data re-reads the file every epoch. The model
(models.tagging) takes raw tokens, so the export answers whitespace-split text or tokens with
tag names.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.config import TrainConfig
from pipelines.datasets import data_files
from pipelines.tasks.classify import (
    CACHE_ROWS,
    EVAL_BATCH_SIZE,
    checkpoint_classes,
    evaluation_report,
    reject_unseen_classes,
    require_two_classes,
)
from pipelines.training.task import Task
from serving.errors import UserError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

log = logging.getLogger("pipelines.tasks.tagging")

SHUFFLE_BUFFER = 20_000
PADDING_TAG = -1
WARMUP_TEXTS = ("The quick brown fox jumps over the lazy dog .", "I saw her in Paris yesterday .")


@dataclasses.dataclass
class TagConfig(data_files.DataFilesConfig):
    """Settings of the tagger (and TrainConfig's).

    Args:
        data: training data: a .conll/.conllu/.txt/.jsonl file (optionally .gz) or a data set
            name.
        validation_data: validation file; empty holds out validation_fraction of `data`
            (or takes a named data set's validation split).
        test_data: test file `rnnkit evaluate` scores.
        token_column: the token column: a 1-based number or CoNLL-U column name (JSONL: the
            key); empty for the first column, FORM, or `tokens`.
        tag_column: the tag column likewise; empty for the last column, UPOS, or `tags`.
        cell: recurrent cell, `rnn`, `lstm`, `gru` or `ln_lstm`.
        max_tokens: word vocabulary size (the most frequent training words).
        min_word_count: training occurrences a word needs to get its own vector; rarer words
            share the unknown word's vector, which thus learns what unseen words look like.
        char_features: add features from each token's characters (prefixes, suffixes, shape).
        max_chars: characters of each token the character features read.
        char_dim: size of the character embeddings.
        char_filters: character convolution filters.
        embedding_dim: size of the word embeddings.
        units: units per direction of each recurrent layer.
        layers: stacked bidirectional recurrent layers.
        dropout: dropout on token features, recurrent inputs and the RNN's output.
        word_dropout: share of training words replaced by the unknown word, so its vector
            learns to stand for words training never saw.
        max_length: training sentences longer than this are cut (evaluation reads them whole).
        max_input_tokens: the export tags at most this many tokens of each text (cut inside the
            graph; recorded in the export's metadata).
        max_request_texts: the export refuses requests of more texts (INVALID_ARGUMENT).
    """

    token_column: str = ""
    tag_column: str = ""
    cell: str = "lstm"
    max_tokens: int = 30_000
    min_word_count: int = 2
    char_features: bool = True
    max_chars: int = 16
    char_dim: int = 32
    char_filters: int = 64
    embedding_dim: int = 100
    units: int = 128
    layers: int = 1
    dropout: float = 0.3
    word_dropout: float = 0.0
    max_length: int = 100
    max_input_tokens: int = 512
    max_request_texts: int = 64

    def validate(self) -> None:
        super().validate()
        self.check_cell()
        self.check_at_least_one("max_tokens", "units", "max_length", "embedding_dim", "layers",
                                "max_chars", "char_dim", "char_filters", "min_word_count")
        self.check_rates("dropout", "word_dropout")


@dataclasses.dataclass
class TagScan:
    """What one pass over a part's sentences found.

    Args:
        tags: tag -> tokens, in order of first appearance.
        words: lower-cased word -> tokens (training part only).
        chars: character -> occurrences (training part only).
        sentences: sentences read.
        tokens: tokens read.
    """

    tags: collections.Counter
    words: collections.Counter
    chars: collections.Counter
    sentences: int
    tokens: int


class TagTask(Task):
    """Many-to-many synchronised: a BiRNN tags every token of a sentence."""

    name: ClassVar[str] = "tag"
    dataset: ClassVar[str] = ""
    export_name: ClassVar[str] = "tagger"
    config_class: ClassVar[type[TrainConfig]] = TagConfig
    monitor: ClassVar[str] = "val_accuracy"
    monitor_mode: ClassVar[str] = "max"
    fields: ClassVar[tuple[str, str]] = ("token_column", "tag_column")
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        # Sized on UD English EWT (12.5k sentences); bench/data_tasks.py --data ud_en_ewt.
        # Quick: test UPOS 0.940 in 157 s of training (docs/data.md).
        "quick": {"epochs": 4, "batch_size": 32, "learning_rate": 2e-3, "embedding_dim": 64,
                  "units": 64, "char_filters": 48, "dropout": 0.25,
                  "early_stopping_patience": 2},
        # Test UPOS 0.9501 in 761 s of training on quiet cores (best epoch 18, stopped at 24).
        # Measured on the way (docs/data.md): BiLSTM 128, word dropout 0.05, 20 epochs at
        # decay 0.9: 0.948; two layers of 128: 0.945; one of 200, 40 epochs at decay 0.93:
        # 0.9496; then 256 units and word dropout 0.1: this profile.
        "full": {"epochs": 40, "batch_size": 32, "learning_rate": 2e-3, "lr_decay": 0.93,
                 "embedding_dim": 100, "units": 256, "char_filters": 100, "dropout": 0.5,
                 "word_dropout": 0.1, "early_stopping_patience": 6},
    }

    def __init__(self) -> None:
        import models.tagging  # noqa: F401  (registers the layers for loading checkpoints)

        self._train_scan: tuple[tuple, TagScan] | None = None
        self._resumed_tags: list[str] | None = None

    def _sentences(self, config: Any, part: str) -> Iterator[tuple[int, dict[str, Any]]]:
        return data_files.iter_part(config, part, self.fields,
                                    key=lambda s: " ".join(s["tokens"]), tagged=True,
                                    kind="tag")

    def scan(self, config: Any, part: str, known: list[str] | None = None) -> TagScan:
        """One pass over a part: tag (and, for training, word and character) counts.

        Args:
            config: the run's config.
            part: `train`, `validation` or `test`.
            known: the training tags; a tag of this part outside them is an error.
        """
        where = data_files.part_label(config, part)
        tags: collections.Counter = collections.Counter()
        words: collections.Counter = collections.Counter()
        chars: collections.Counter = collections.Counter()
        sentences = tokens = 0
        for _, sentence in self._sentences(config, part):
            sentences += 1
            tokens += len(sentence["tokens"])
            tags.update(sentence["tags"])
            if known is None:
                for token in sentence["tokens"]:
                    words[token.lower()] += 1
                    chars.update(token[: config.max_chars])
        if sentences == 0:
            raise UserError(f"{where} has no sentences", "pass a CoNLL file: one `token tag` "
                            "per line, a blank line between sentences")
        if known is None:
            require_two_classes(tags, where, "the tag column", "tag", "a tagger", "--tag-column")
        else:
            reject_unseen_classes(tags, known, where, "tags", "tokens",
                                  "fix those tags or add examples of them to the training data")
        return TagScan(tags, words, chars, sentences, tokens)

    def train_scan(self, config: Any) -> TagScan:
        """The training part's scan, made once per task object.

        Args:
            config: the run's config.
        """
        key = data_files.data_key(config, self.fields)
        if self._train_scan is None or self._train_scan[0] != key:
            self._train_scan = key, self.scan(config, "train")
            scan = self._train_scan[1]
            log.info("%s: %d sentences, %d tokens, %d words, %d tags %s",
                     data_files.part_label(config, "train"), scan.sentences, scan.tokens,
                     len(scan.words), len(scan.tags), list(scan.tags))
        return self._train_scan[1]

    def examples(self, config: Any, part: str, tags: list[str],
                 max_length: int | None = None) -> tf.data.Dataset:
        """Unbatched (tokens [n], tag ids [n]) of a part's sentences, streamed from disk.

        Args:
            config: the run's config.
            part: `train`, `validation` or `test`.
            tags: the tag names, index order.
            max_length: cut sentences to this many tokens; None keeps them whole.
        """
        import tensorflow as tf

        index = {tag: i for i, tag in enumerate(tags)}

        def generate() -> Iterator[tuple[list[str], list[int]]]:
            for _, sentence in self._sentences(config, part):
                yield (sentence["tokens"][:max_length],
                       [index[t] for t in sentence["tags"][:max_length]])

        return tf.data.Dataset.from_generator(
            generate, output_signature=(tf.TensorSpec([None], tf.string),
                                        tf.TensorSpec([None], tf.int32)))

    def batches(self, data: tf.data.Dataset, batch_size: int, rows: int,
                shuffle_seed: int | None = None) -> tf.data.Dataset:
        """(tokens, tag ids) batches padded with "" and -1, sentences of similar length together.

        Args:
            data: unbatched (tokens, tag ids).
            batch_size: sentences per batch.
            rows: sentences in data (small data is cached in memory).
            shuffle_seed: shuffle every epoch with this seed; None keeps the order.
        """
        import tensorflow as tf

        if rows <= CACHE_ROWS:
            data = data.cache()
        if shuffle_seed is not None:
            data = data.shuffle(min(rows, SHUFFLE_BUFFER), seed=shuffle_seed,
                                reshuffle_each_iteration=True)
        data = data.bucket_by_sequence_length(
            element_length_func=lambda tokens, _: tf.shape(tokens)[0],
            bucket_boundaries=[8, 16, 24, 32, 48, 64, 100],
            # Tag id -1 marks padding, which the loss and the accuracy leave out.
            bucket_batch_sizes=[batch_size] * 8, padding_values=("", PADDING_TAG),
            pad_to_bucket_boundary=False, drop_remainder=False)
        return data.prefetch(tf.data.AUTOTUNE)

    def datasets(self, config: TrainConfig) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        config.validate()
        scan = self.train_scan(config)
        tags = self._resumed_tags or list(scan.tags)
        val_scan = self.scan(config, "validation", known=tags)
        if config.test_data:  # its errors now, not after training
            self.scan(config, "test", known=tags)
        train = self.examples(config, "train", tags, config.max_length)
        val = self.examples(config, "validation", tags)
        return (self.batches(train, config.batch_size, scan.sentences, shuffle_seed=config.seed),
                self.batches(val, config.batch_size, val_scan.sentences))

    def resume_from(self, model: keras.Model, config: TrainConfig) -> None:
        self._resumed_tags = checkpoint_classes(model, self.train_scan(config).tags, config,
                                                "tags", "tokens")

    def build_model(self, config: TrainConfig) -> keras.Model:
        from models.tagging import tagger

        config.validate()
        scan = self.train_scan(config)
        words = [w for w, n in scan.words.most_common(config.max_tokens)
                 if n >= config.min_word_count and w]
        chars = [c for c, n in scan.chars.most_common() if n >= 2] if config.char_features else []
        log.info("vocabulary: %d words (of %d), %d characters", len(words), len(scan.words),
                 len(chars))
        return tagger(words, chars, list(scan.tags), cell=config.cell,
                      embedding_dim=config.embedding_dim, char_dim=config.char_dim,
                      char_filters=config.char_filters, max_chars=config.max_chars,
                      units=config.units, layers=config.layers, dropout=config.dropout,
                      word_dropout=config.word_dropout, seed=config.seed)

    def loss(self, config: TrainConfig) -> Any:
        import keras

        return keras.losses.SparseCategoricalCrossentropy(ignore_class=PADDING_TAG)

    def metrics(self, config: TrainConfig) -> list[Any]:
        import keras

        class TokenAccuracy(keras.metrics.SparseCategoricalAccuracy):
            """Accuracy over real tokens: padding (tag id -1) counts neither way."""

            def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
                real = keras.ops.cast(y_true != PADDING_TAG, "float32")
                return super().update_state(keras.ops.maximum(y_true, 0), y_pred, real)

        return [TokenAccuracy(name="accuracy")]

    def evaluate(self, model: keras.Model, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
        import numpy as np
        import tensorflow as tf

        from models.label_names import label_names

        tags = label_names(model)
        scan = self.scan(config, "test", known=tags)
        forward = tf.function(lambda tokens: model(tokens, training=False),
                              input_signature=[tf.TensorSpec([None, None], tf.string)],
                              autograph=False)
        data = self.examples(config, "test", tags)
        if config.max_eval_examples is not None:
            data = data.take(config.max_eval_examples)
        true, predicted, sentences, exact = [], [], 0, 0
        for tokens, tag_ids in self.batches(data, EVAL_BATCH_SIZE, scan.sentences):
            guess = np.argmax(forward(tokens).numpy(), axis=-1)
            valid = tag_ids.numpy() != PADDING_TAG
            true.append(tag_ids.numpy()[valid])
            predicted.append(guess[valid])
            sentences += int(valid.shape[0])
            exact += int(np.sum(np.all((guess == tag_ids.numpy()) | ~valid, axis=1)))
        report = evaluation_report(np.concatenate(true), np.concatenate(predicted), tags, config,
                                   run_dir, self.name)
        report["n_tokens"] = report.pop("n_examples")
        report["n_sentences"] = sentences
        report["sentence_accuracy"] = exact / sentences if sentences else float("nan")
        return report

    def serving_signatures(self, model: keras.Model, config: TrainConfig,
                           run_dir: Path | None = None) -> dict[str, Any]:
        import tensorflow as tf

        from models.label_names import label_names
        from models.text_bounds import check_batch_size, cut_characters, cut_tokens

        tags = label_names(model)
        self._export_tags = tags
        names = tf.constant(tags)

        def tag(tokens: tf.Tensor) -> dict[str, tf.Tensor]:
            # Bounded work per request (issue 24): so many texts, tokens, characters per token.
            tokens = check_batch_size(tokens, config.max_request_texts)
            tokens = tokens[:, :config.max_input_tokens]
            # At least one (padding) column: the RNN cannot run over zero steps, and a batch of
            # empty texts has none.
            missing = tf.maximum(1 - tf.shape(tokens)[1], 0)
            tokens = tf.pad(tokens, [[0, 0], [0, missing]], constant_values="")
            best = tf.argmax(model(cut_tokens(tokens), training=False), axis=-1)
            return {"tokens": tokens,
                    "tags": tf.where(tokens != "", tf.gather(names, best), "")}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")],
                     autograph=False)
        def serving_default(text: tf.Tensor) -> dict[str, tf.Tensor]:
            words = tf.strings.split(cut_characters(text, config.max_input_tokens))
            return tag(words[:, :config.max_input_tokens].to_tensor(default_value=""))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="tokens")],
                     autograph=False)
        def tag_tokens(tokens: tf.Tensor) -> dict[str, tf.Tensor]:
            return tag(tokens)

        return {"serving_default": serving_default, "tag_tokens": tag_tokens}

    def export_metadata(self, config: TrainConfig, run_dir: Path | None) -> dict[str, Any]:
        tags = getattr(self, "_export_tags", None)
        if tags is None and run_dir is not None:
            from models.label_names import label_names
            from pipelines.training.checkpoints import CheckpointStore

            tags = label_names(CheckpointStore(run_dir).load_model("best"))
        from models.text_bounds import MAX_TOKEN_CHARS

        return {"tags": tags, "tokens_signature": "tag_tokens",
                "max_input_tokens": config.max_input_tokens,
                "max_request_texts": config.max_request_texts,
                "max_token_chars": MAX_TOKEN_CHARS}

    def warmup_requests(self) -> list[Any]:
        from serving.export import predict_log

        return [predict_log({"text": list(WARMUP_TEXTS[:n])}, model_name=self.export_name)
                for n in (1, len(WARMUP_TEXTS))]
