"""`classify`: text -> one of N labels from a user's file (or a named data set such as `trec`).

Many-to-one by default (the sentiment presets' bidirectional RNN over the tokens, with N softmax
outputs), one-to-one with `--set model=bow` (a bag-of-words vector through one recurrent step).
Rows stream from the file (pipelines.datasets.data_files): one scan finds the label set (in order of
first appearance), drops and counts empty texts and rejects what cannot train, then tf.data re-reads
the file every epoch, cached in memory only when it is small. The label names live in the model
(models.label_names), so evaluation and the export answer with them.
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
from pipelines.training import pretraining
from pipelines.training.task import Task
from serving.errors import UserError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

log = logging.getLogger("pipelines.tasks.classify")

EVAL_BATCH_SIZE = 256
# Training data with at most this many rows is cached in memory after the first epoch; larger
# files are re-read from disk every epoch, so memory stays flat whatever their size.
CACHE_ROWS = 500_000
SHUFFLE_BUFFER = 20_000
MODELS = ("rnn", "bow")
BOW_MODES = ("tf_idf", "multi_hot", "count")  # TextVectorization output modes of `bow`
WARMUP_TEXTS = ("What is the capital of France ?", "A quiet, lovely film.",
                "How many people live in Tokyo ?")


@dataclasses.dataclass
class ManyToOneConfig(TrainConfig):
    """Settings of the many-to-one text model (models.sentiment.many_to_one), which `classify`
    and the `sentiment` preset share (and TrainConfig's).

    Args:
        cell: recurrent cell, `rnn`, `lstm`, `gru` or `ln_lstm`.
        max_tokens: vocabulary size (adapted on the training part only).
        max_length: tokens of each text the model reads.
        keep: which tokens of a longer text it reads: `first` or `last`.
        embedding_dim: size of the token embeddings.
        units: units per direction of each recurrent layer (of the one cell for `bow`).
        layers: stacked bidirectional recurrent layers.
        dense_units: units of the dense layer before the output; 0 for none.
        dropout: dropout on embeddings, recurrent inputs and the dense layer.
        recurrent_dropout: dropout on the recurrent state.
        pooling: `last` (final states of the last layer), `max` (maximum over time) or
            `max_mean` (maximum and mean over time).
        word_dropout: share of whole tokens dropped from each training text.
        encoder_from: a finished language_model run directory whose word vectors and
            recurrent layers start the model (pipelines.training.pretraining), and whose cell,
            embedding_dim and units it takes unless they are set; empty for none.
        encoder_learning_rate: the pretrained layers' learning rate as a share of
            learning_rate (e.g. 0.5 fine-tunes them more gently than the new layers).
        gradual_unfreezing: the pretrained layers start frozen; the top one trains from the
            second epoch, each one below an epoch later.
        char_features: add features of each token's characters to its embedding, so words
            outside the vocabulary (names, numbers, misspellings) still tell something.
        max_chars: characters of each token the character features read.
        char_dim: size of the character embeddings.
        char_filters: character convolution filters.
    """

    cell: str = "lstm"
    max_tokens: int = 20_000
    max_length: int = 100
    keep: str = "first"
    embedding_dim: int = 64
    units: int = 64
    layers: int = 1
    dense_units: int = 64
    dropout: float = 0.3
    recurrent_dropout: float = 0.0
    pooling: str = "max"
    word_dropout: float = 0.0
    encoder_from: str = ""
    encoder_learning_rate: float = 1.0
    gradual_unfreezing: bool = False
    char_features: bool = False
    max_chars: int = 16
    char_dim: int = 32
    char_filters: int = 64

    def validate(self) -> None:
        super().validate()
        from models.sentiment import POOLINGS, TRUNCATIONS

        pretraining.check_options(self)
        self.check_cell()
        self.check_at_least_one("max_tokens", "units", "max_length", "embedding_dim", "layers",
                                "max_chars", "char_dim", "char_filters")
        self.check_rates("dropout", "recurrent_dropout", "word_dropout")
        self.check_choice("keep", TRUNCATIONS, "a truncation")
        self.check_choice("pooling", POOLINGS, "a pooling")
        if self.char_features and self.encoder_from:
            raise UserError("char_features=true widens the recurrent layer's input, so the "
                            "language model's layer of encoder_from no longer fits",
                            "drop --set char_features=true, or drop encoder_from")

    def many_to_one_arguments(self) -> dict[str, Any]:
        """The keyword arguments of models.sentiment.many_to_one these settings give."""
        return {"cell": self.cell, "embedding_dim": self.embedding_dim, "units": self.units,
                "layers": self.layers, "dense_units": self.dense_units,
                "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout,
                "max_length": self.max_length, "keep": self.keep, "pooling": self.pooling,
                "word_dropout": self.word_dropout, "seed": self.seed,
                "char_features": self.char_features, "max_chars": self.max_chars,
                "char_dim": self.char_dim, "char_filters": self.char_filters}


@dataclasses.dataclass
class ClassifyConfig(data_files.DataFilesConfig, ManyToOneConfig):
    """Settings of the text classifier (and those of DataFilesConfig, ManyToOneConfig and
    TrainConfig; `data` is a .csv/.tsv/.jsonl file, optionally .gz, or a data set name).

    Args:
        text_column: the column holding the text.
        label_column: the column holding the label.
        max_empty_fraction: rows with empty text are dropped and counted; above this share of
            the training rows, training stops with an error instead.
        model: `rnn` (many-to-one over the token sequence) or `bow` (one-to-one, bag of words).
        unknown_dropout: share of training tokens replaced by the out-of-vocabulary token (whose
            vector otherwise never trains, as every training word is in the vocabulary).
        ngrams: `bow`: count word n-grams up to this length.
        output_mode: `bow`: `tf_idf`, `multi_hot` or `count`.
    """

    text_column: str = "text"
    label_column: str = "label"
    max_empty_fraction: float = 0.1
    model: str = "rnn"
    unknown_dropout: float = 0.0
    ngrams: int = 2
    output_mode: str = "tf_idf"

    def validate(self) -> None:
        if self.text_column == self.label_column:
            raise UserError(f"the text and the label column are both {self.text_column!r}",
                            "pass different --text-column and --label-column")
        self.check_choice("model", MODELS, "a classifier model")
        super().validate()
        self.check_at_least_one("ngrams")
        self.check_rates("unknown_dropout")
        self.check_shares("max_empty_fraction")
        self.check_choice("output_mode", BOW_MODES, "a bag-of-words mode")
        if self.encoder_from and self.model != "rnn":
            raise UserError(f"encoder_from needs the recurrent model, not model={self.model}",
                            "drop --set model=bow, or drop encoder_from")


@dataclasses.dataclass
class LabelScan:
    """What one pass over a part's rows found.

    Args:
        counts: label -> rows, in order of first appearance.
        rows: rows kept (non-empty text).
        empty: rows dropped for empty text.
    """

    counts: collections.Counter
    rows: int
    empty: int


def checkpoint_classes(model: keras.Model, counts: collections.Counter, config: Any,
                       plural: str, unit: str) -> list[str]:
    """A resumed run's class names, in its model's order (class ids are positions in it; the
    data's rows are matched by name), once the training part holds no class outside them.

    Args:
        model: the run's checkpoint, with a LabelNames layer.
        counts: class -> how often the training part holds it.
        config: the resumed run's config.
        plural: the classes, e.g. "labels" or "tags".
        unit: what is counted, e.g. "rows" or "tokens".
    """
    from models.label_names import label_names

    names = label_names(model)
    reject_unseen_classes(counts, names, data_files.part_label(config, "train"), plural, unit,
                          "resume with the data the run trained on, or start a new run with "
                          "another --run-dir")
    return names


def held_out_part(config: Any, part: str) -> bool:
    """Whether a part's rows are a hash-picked share of the training source's.

    Args:
        config: the task config.
        part: `train`, `validation` or `test`.
    """
    return part == "validation" and data_files.part_source(config, part)[2] is True


def require_two_classes(counts: collections.Counter, where: str, column: str, noun: str,
                        learner: str, flag: str) -> None:
    """A training part must hold at least two classes (labels, tags) to learn from.

    Args:
        counts: class -> how often the training part holds it.
        where: the part, as errors name it.
        column: the column the classes come from, as errors name it.
        noun: one class, e.g. "class" or "tag".
        learner: what needs two, e.g. "a classifier".
        flag: the flag that picks the column.
    """
    if len(counts) < 2:
        raise UserError(f"{where}: {column} has {len(counts)} {noun} "
                        f"({', '.join(map(repr, counts))}); {learner} needs at least two",
                        f"check {flag}")


def unseen_classes(counts: collections.Counter, known: list[str]) -> dict[str, int]:
    """The classes of a part that training never saw, with how often the part holds them.

    Args:
        counts: class -> how often the part holds it.
        known: the training classes.
    """
    return {name: n for name, n in counts.items() if name not in known}


def reject_unseen_classes(counts: collections.Counter, known: list[str], where: str,
                          plural: str, unit: str, fix: str) -> None:
    """A validation or test part may hold no class the model never saw in training.

    Args:
        counts: class -> how often the part holds it.
        known: the training classes.
        where: the part, as errors name it.
        plural: the classes, e.g. "labels" or "tags".
        unit: what is counted, e.g. "rows" or "tokens".
        fix: what to do about them.
    """
    unseen = unseen_classes(counts, known)
    if unseen:
        listed = ", ".join(f"{name!r} ({n} {unit})" for name, n in
                           sorted(unseen.items(), key=lambda kv: -kv[1])[:5])
        raise UserError(f"{where} has {plural} never seen in training: {listed}",
                        f"the model knows only {known}; {fix}")


def evaluation_report(true: Any, predicted: Any, names: list[str], config: Any, run_dir: Path,
                      task_name: str) -> dict[str, Any]:
    """A classifier's (or tagger's) test metrics, with the confusion matrix drawn into run_dir.

    Args:
        true: true class indices.
        predicted: predicted class indices.
        names: class (or tag) names, index order.
        config: the run's config (names the scored data).
        run_dir: the run directory; gets confusion_matrix.png (confusion_matrix-<stem>.png for
            a `--test-data`/`evaluate --data` file).
        task_name: the task, for the plot's title.
    """
    import numpy as np

    from pipelines.training.class_metrics import CONFUSION_FILE, multiclass_report, plot_confusion
    from pipelines.training.run_dir import scored_name

    report = multiclass_report(true, predicted, names)
    counts = np.bincount(np.asarray(true, dtype=np.int64), minlength=len(names))
    report["majority_baseline"] = float(counts.max() / max(counts.sum(), 1))
    report["data"] = data_files.part_label(config, "test")
    plot_file = scored_name(CONFUSION_FILE, config.test_data)
    plot_confusion(report["confusion_matrix"], names, Path(run_dir) / plot_file,
                   title=f"{task_name} — {report['data']}")
    report["confusion_matrix_png"] = plot_file
    return report


class ClassifyTask(pretraining.StartsFromLanguageModel, Task):
    """Many-to-one (or one-to-one) text classification over a user's labelled rows."""

    name: ClassVar[str] = "classify"
    dataset: ClassVar[str] = ""
    export_name: ClassVar[str] = "classifier"
    config_class: ClassVar[type[TrainConfig]] = ClassifyConfig
    monitor: ClassVar[str] = "val_accuracy"
    monitor_mode: ClassVar[str] = "max"
    fields: ClassVar[tuple[str, str]] = ("text_column", "label_column")
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        # Sized on TREC (5.5k short questions); bench/data_tasks.py measures them, the numbers
        # are in docs/data.md. Small data overfits within 3 epochs: heavy dropout, whole words
        # dropped, max and mean over time.
        "quick": {"epochs": 8, "batch_size": 32, "learning_rate": 2e-3, "embedding_dim": 128,
                  "units": 64, "dense_units": 64, "dropout": 0.5, "word_dropout": 0.2,
                  "pooling": "max_mean", "early_stopping_patience": 3},
        "full": {"epochs": 20, "batch_size": 32, "learning_rate": 1e-3, "embedding_dim": 128,
                 "units": 128, "dense_units": 128, "dropout": 0.5, "word_dropout": 0.2,
                 "pooling": "max_mean", "early_stopping_patience": 5},
    }

    def __init__(self) -> None:
        # Registers the model's layers with Keras, so a checkpoint loads in a fresh process.
        import models.label_names
        import models.sentiment  # noqa: F401

        self._scans: dict[tuple, LabelScan] = {}
        self._resumed_names: list[str] | None = None

    # --- data -----------------------------------------------------------------------------

    def _rows(self, config: Any, part: str) -> Iterator[tuple[int, str, str]]:
        """(line, text, label) of a part's rows, empty texts included, labels stripped."""
        # A row holds its columns in the order of self.fields: text first, so the held-out
        # validation split hashes the text.
        for line, row in data_files.iter_part(config, part, self.fields,
                                              key=lambda r: next(iter(r.values())),
                                              kind="classify"):
            text, label = row.values()
            # "text, pos" in a CSV typed with a space after its commas means the label "pos".
            yield line, text, label.strip()

    def scan(self, config: Any, part: str, known: list[str] | None = None) -> LabelScan:
        """One pass over a part: label counts and empty rows, with every data error raised.

        Args:
            config: the run's config.
            part: `train`, `validation` or `test`.
            known: the training labels; a label of this part outside them is an error.
        """
        where = data_files.part_label(config, part)
        counts: collections.Counter = collections.Counter()
        empty = rows = 0
        for line, text, label in self._rows(config, part):
            if not text.strip():
                empty += 1
                continue
            if not label:
                source, split, _ = data_files.part_source(config, part)
                raise UserError(f"{data_files.source_label(source, split)}, line {line}: the "
                                "label is empty",
                                "give every row a label, or remove the row")
            counts[label] += 1
            rows += 1
        if rows == 0:
            raise UserError(f"{where} has no rows" + (f" left after dropping {empty} with "
                                                      "empty text" if empty else ""),
                            f"pass a file with rows of text in {config.text_column!r} and "
                            f"labels in {config.label_column!r}")
        data_files.drop_empty_rows(where, empty, rows, config.max_empty_fraction, "empty text",
                                   "--text-column")
        if known is None:
            require_two_classes(counts, where, f"the label column {config.label_column!r}",
                                "class", "a classifier", "--label-column")
        elif held_out_part(config, part):
            # The hash, not the user, put every row of a rare label in validation: those rows
            # are left out of it (examples() skips them too), not an error.
            unseen = unseen_classes(counts, known)
            if unseen:
                log.warning("%s: left out %d rows of labels the training part lacks (all their "
                            "rows were held out): %s", where, sum(unseen.values()),
                            ", ".join(f"{k!r} ({n})" for k, n in unseen.items()))
                for name in unseen:
                    rows -= counts.pop(name)
                if rows == 0:
                    raise UserError(f"{where} has no rows of a label the training part has",
                                    "pass --validation-data FILE, or raise --set "
                                    "validation_fraction=...")
        else:
            reject_unseen_classes(counts, known, where, "labels", "rows",
                                  "remove those rows or add examples of them to the training "
                                  "data")
        return LabelScan(counts, rows, empty)

    def label_names(self, config: Any) -> list[str]:
        """The training labels, in order of first appearance (scanning the data once); a
        resumed run's own, in its model's order.

        Args:
            config: the run's config.
        """
        return self._resumed_names or list(self.train_scan(config).counts)

    def resume_from(self, model: keras.Model, config: TrainConfig) -> None:
        self._resumed_names = checkpoint_classes(model, self.train_scan(config).counts, config,
                                                 "labels", "rows")

    def train_scan(self, config: Any) -> LabelScan:
        """The training part's scan, made once per data settings.

        Args:
            config: the run's config.
        """
        key = data_files.data_key(config, self.fields)
        if key not in self._scans:
            scan = self._scans[key] = self.scan(config, "train")
            log.info("%s: %d rows, %d classes %s", data_files.part_label(config, "train"),
                     scan.rows, len(scan.counts), dict(scan.counts))
        return self._scans[key]

    def examples(self, config: Any, part: str, names: list[str]) -> tf.data.Dataset:
        """Unbatched (text, class index) of a part, empty texts dropped, streamed from disk.

        Args:
            config: the run's config.
            part: `train`, `validation` or `test`.
            names: the class names, index order.
        """
        import tensorflow as tf

        index = {name: i for i, name in enumerate(names)}

        def generate() -> Iterator[tuple[list[str], list[int]]]:
            texts: list[str] = []
            labels: list[int] = []
            for _, text, label in self._rows(config, part):
                if text.strip() and label in index:  # others: see scan(), held-out rows
                    texts.append(text)
                    labels.append(index[label])
                if len(texts) == data_files.GENERATOR_BATCH:
                    yield texts, labels
                    texts, labels = [], []
            if texts:
                yield texts, labels

        # Rows cross from Python in blocks: one call per row would cost more than parsing it.
        return tf.data.Dataset.from_generator(
            generate, output_signature=(tf.TensorSpec([None], tf.string),
                                        tf.TensorSpec([None], tf.int32))).unbatch()

    def _batches(self, data: tf.data.Dataset, config: Any, rows: int,
                 shuffle: bool) -> tf.data.Dataset:
        import tensorflow as tf

        from pipelines.datasets.imdb import word_count

        if rows <= CACHE_ROWS:
            data = data.cache()
        if shuffle:
            data = data.shuffle(min(rows, SHUFFLE_BUFFER), seed=config.seed,
                                reshuffle_each_iteration=True)
        top = config.max_length
        boundaries = sorted({max(2, int(top * f)) for f in (0.1, 0.2, 0.35, 0.5, 0.75, 1.0)})
        # Texts of similar length share a batch, wasting little padding.
        data = data.bucket_by_sequence_length(
            element_length_func=lambda text, _: word_count(text),
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
            pad_to_bucket_boundary=False, drop_remainder=False)
        return data.prefetch(tf.data.AUTOTUNE)

    def datasets(self, config: TrainConfig) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        config.validate()
        names = self.label_names(config)
        val_scan = self.scan(config, "validation", known=names)
        if config.test_data:  # its errors now, not after training
            self.scan(config, "test", known=names)
        train = self.examples(config, "train", names)
        val = self.examples(config, "validation", names)
        return (self._batches(train, config, self.train_scan(config).rows, shuffle=True),
                self._batches(val, config, val_scan.rows, shuffle=False))

    # --- model ----------------------------------------------------------------------------

    def build_model(self, config: TrainConfig) -> keras.Model:
        import keras
        import tensorflow as tf

        from models.label_names import LabelNames
        from models.sentiment import make_vectorizer, many_to_one, one_to_one

        config.validate()
        names = self.label_names(config)
        texts = self.examples(config, "train", names).map(lambda text, _: text)
        texts = texts.batch(1024).prefetch(tf.data.AUTOTUNE)
        if config.model == "bow":
            vectorizer = make_vectorizer(texts, config.max_tokens,
                                         output_mode=config.output_mode,
                                         ngrams=config.ngrams if config.ngrams > 1 else None)
            inner = one_to_one(vectorizer, cell=config.cell, units=config.units,
                               dropout=config.dropout, seed=config.seed, classes=len(names),
                               name=f"classify_bow_{config.cell}")
        else:
            vectorizer = make_vectorizer(texts, config.max_tokens)
            inner = many_to_one(vectorizer, **config.many_to_one_arguments(),
                                classes=len(names), name=f"classify_bi{config.cell}",
                                unknown_dropout=config.unknown_dropout)
        log.info("vocabulary: %d tokens", vectorizer.vocabulary_size())
        if config.encoder_from:
            pretraining.start_from_language_model(inner, vectorizer, config)
        scores = LabelNames(names, name="label_names")(inner.outputs[0])
        return keras.Model(inner.inputs, scores, name=inner.name)

    def loss(self, config: TrainConfig) -> Any:
        import keras

        return keras.losses.SparseCategoricalCrossentropy()

    def metrics(self, config: TrainConfig) -> list[Any]:
        import keras

        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    # --- evaluation -----------------------------------------------------------------------

    def predict(self, model: keras.Model, config: Any, part: str) -> tuple[Any, Any]:
        """True and predicted class indices of a part's rows.

        Args:
            model: a model of this task.
            config: its config.
            part: `train`, `validation` or `test`.
        """
        import numpy as np
        import tensorflow as tf

        from models.label_names import label_names

        names = label_names(model)
        forward = tf.function(lambda text: model(text, training=False),
                              input_signature=[tf.TensorSpec([None], tf.string)],
                              autograph=False)
        true, predicted = [], []
        data = self.examples(config, part, names).batch(EVAL_BATCH_SIZE)
        for text, label in data.prefetch(tf.data.AUTOTUNE):
            predicted.append(np.argmax(forward(text).numpy(), axis=1))
            true.append(label.numpy())
        return np.concatenate(true), np.concatenate(predicted)

    def evaluate(self, model: keras.Model, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
        from models.label_names import label_names

        names = label_names(model)
        scan = self.scan(config, "test", known=names)
        true, predicted = self.predict(model, config, "test")
        if config.max_eval_examples is not None:
            true, predicted = true[:config.max_eval_examples], predicted[:config.max_eval_examples]
        report = evaluation_report(true, predicted, names, config, run_dir, self.name)
        report["dropped_empty"] = scan.empty
        return report

    # --- export ---------------------------------------------------------------------------

    def serving_signatures(self, model: keras.Model, config: TrainConfig,
                           run_dir: Path | None = None) -> dict[str, Any]:
        import tensorflow as tf

        from models.label_names import label_names

        names = label_names(model)
        self._export_names = names
        classes = tf.constant(names)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")],
                     autograph=False)
        def serving_default(text: tf.Tensor) -> dict[str, tf.Tensor]:
            p = model(text, training=False)
            best = tf.argmax(p, axis=1)
            return {"label": tf.gather(classes, best), "probability": tf.reduce_max(p, axis=1),
                    "probabilities": p}

        # TF Serving's Classify API feeds serialized tf.Examples as `inputs` and reads
        # `classes` and `scores` ([batch, classes]).
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")],
                     autograph=False)
        def classify(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            features = tf.io.parse_example(inputs, {"text": tf.io.FixedLenFeature([], tf.string)})
            p = model(features["text"], training=False)
            return {"classes": tf.tile(classes[None, :], [tf.shape(p)[0], 1]), "scores": p}

        return {"serving_default": serving_default, "classify": classify}

    def export_metadata(self, config: TrainConfig, run_dir: Path | None) -> dict[str, Any]:
        names = getattr(self, "_export_names", None)
        if names is None and run_dir is not None:
            from models.label_names import label_names
            from pipelines.training.checkpoints import CheckpointStore

            names = label_names(CheckpointStore(run_dir).load_model("best"))
        return {"classes": names}

    def signature_methods(self) -> dict[str, str]:
        from serving.export import CLASSIFY_METHOD

        return {"classify": CLASSIFY_METHOD}

    def warmup_requests(self) -> list[Any]:
        from serving.export import predict_log

        return [predict_log({"text": list(WARMUP_TEXTS[:n])}, model_name=self.export_name)
                for n in (1, len(WARMUP_TEXTS))]
