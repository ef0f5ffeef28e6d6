"""`language_model`: predict the next word of running text (a .txt/.csv/.jsonl file, wikitext2,
or IMDB's 25k training and 50k unlabelled reviews).

Training is the classic setup (Zaremba et al. 2014): the training stream is cut into
`batch_size` contiguous rows and read in windows of `tbptt_steps` words; pipelines.training.tbptt
carries each row's recurrent state from one window into the next (the forward pass sees the whole
text) while backpropagation stops at the window's start. The data set is one element, the whole
stream [batch, length]; tbptt's `chunk_batches` cuts the windows, zero states only at its start.

Evaluation runs the exact softmax over the whole test (and validation) stream with the state
carried from window to window, and puts count-based baselines of the same tokens beside it
(pipelines.tasks.ngram_baselines). The export generates inside the graph (models.language_model).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.config import TrainConfig
from pipelines.datasets import data_files, text_corpus
from pipelines.training.task import Task
from serving.errors import UserError

if TYPE_CHECKING:
    import keras
    import numpy as np
    import tensorflow as tf

log = logging.getLogger("pipelines.tasks.language_model")

EVAL_ROWS = 10  # evaluation streams (the usual eval batch of word-level LMs)
EVAL_WINDOW = 100  # words per evaluation call; the state is carried across calls
NEXT_WORDS = 5
MAX_WORDS = 100  # the most words one request may generate
# documents=running holds out passages of 1/PASSAGES of the file's lines, at most this many.
PASSAGES = 200
MAX_PASSAGE_LINES = 100
TEXT_COLUMN = "text"  # the text column's default, and the key a .txt file's lines are given
WARMUP_TEXTS = ("The movie was", "In 1990 , the")
# The continuous cache's flatness and weight tried on validation (Grave et al. 2017 found
# theta 0.3-0.7 and lambda 0.1-0.3 on WikiText-2 for states of 1,024 units).
CACHE_THETAS = (0.1, 0.2, 0.3, 0.5, 0.8)
CACHE_LAMBDAS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
MAX_CACHE = 10_000  # the largest cache Grave et al. used (WikiText-103)


@dataclasses.dataclass
class LanguageModelConfig(data_files.DataFilesConfig):
    """Settings of the word-level language model (and those of DataFilesConfig and TrainConfig;
    `data` is a .txt file, one line a row, a .csv/.tsv/.jsonl file, optionally .gz, or a data set
    name, `wikitext2` or `imdb`; tbptt_steps is the BPTT window and must be set).

    Args:
        text_column: the column holding the text (tables only).
        documents: `lines` (each row a document ending in `<eos>`) or `running` (one text).
        tokenize: `whitespace`, `lower_punct` or `auto` (whitespace for wikitext2, already
            tokenised; lower_punct for everything else).
        max_tokens: vocabulary size, `<unk>` and `<eos>` included (the most frequent words of
            the training part).
        cell: recurrent cell, `rnn`, `lstm`, `gru` or `ln_lstm`.
        embedding_dim: word vector size (the tied output's, and the last layer's units).
        units: units of the recurrent layers below the last.
        layers: stacked recurrent layers.
        dropout: dropout between layers and before the output.
        embedding_dropout: dropout on the word vectors.
        recurrent_dropout: dropout on the recurrent state.
        sampled_words: train with a sampled softmax over this many words per step (validation
            and evaluation stay exact); 0 for the exact softmax in training too.
        generate_words: words serving_default (greedy) generates.
        max_input_tokens: the export reads at most the last this many words of a prompt (cut
            inside the graph; recorded in the export's metadata).
        max_request_texts: the export refuses requests of more prompts (INVALID_ARGUMENT).
        cache_size: evaluation also reports perplexity with a continuous cache of this many
            past steps (models.neural_cache; theta and lambda picked on validation); 0 for none.
    """

    text_column: str = TEXT_COLUMN
    documents: str = "lines"
    tokenize: str = "auto"
    max_tokens: int = 33_278
    cell: str = "lstm"
    embedding_dim: int = 200
    units: int = 200
    layers: int = 2
    dropout: float = 0.3
    embedding_dropout: float = 0.1
    recurrent_dropout: float = 0.0
    sampled_words: int = 0
    generate_words: int = 20
    max_input_tokens: int = 200
    max_request_texts: int = 64
    cache_size: int = 2000
    tbptt_steps: int | None = 35

    def validate(self) -> None:
        super().validate()
        self.check_choice("documents", text_corpus.DOCUMENTS, "a way to read text")
        self.check_choice("tokenize", (*text_corpus.TOKENIZERS, "auto"), "a tokenizer")
        self.check_cell()
        if self.tbptt_steps is None:
            raise UserError("the language model trains with truncated BPTT, tbptt_steps=none",
                            "set a window, e.g. --set tbptt_steps=35")
        self.check_at_least_one("max_tokens", "units", "embedding_dim", "layers", "tbptt_steps")
        self.check_rates("dropout", "embedding_dropout", "recurrent_dropout")
        if self.sampled_words < 0:
            raise UserError(f"sampled_words={self.sampled_words} is negative",
                            "use e.g. --set sampled_words=1024, or 0 for the exact softmax")
        if not 0 <= self.cache_size <= MAX_CACHE:
            # Evaluation holds [thetas, rows, window, cache_size] scores at once.
            raise UserError(f"cache_size={self.cache_size} is not in [0, {MAX_CACHE:,}]",
                            "use e.g. --set cache_size=2000, or 0 for no cache")
        if not 0 <= self.generate_words <= MAX_WORDS:
            raise UserError(f"generate_words={self.generate_words} is not in [0, {MAX_WORDS}]",
                            "pass e.g. --set generate_words=20")


@dataclasses.dataclass
class Corpus:
    """A part's token ids and what reading it found.

    Args:
        ids: int32 token ids of the whole part, in order.
        rows: rows (documents) read.
    """

    ids: np.ndarray
    rows: int


def resolved_tokenize(config: Any) -> str:
    """The tokenize rule a run uses (`auto` resolved by its data).

    Args:
        config: the run's config.
    """
    if config.tokenize == "auto":
        return "whitespace" if config.data == "wikitext2" else "lower_punct"
    return config.tokenize


class LanguageModelTask(Task):
    """Next-word prediction over running text, trained with truncated BPTT."""

    name: ClassVar[str] = "language_model"
    dataset: ClassVar[str] = ""
    export_name: ClassVar[str] = "language_model"
    config_class: ClassVar[type[TrainConfig]] = LanguageModelConfig
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        # Measured on WikiText-2 (docs/language_model.md): one layer of 200 over the full
        # 33,278 words, sampled softmax of 1,024, 4 epochs of batch 64: test perplexity 153.3 in
        # 475 s of training on quiet cores (3 epochs: 160.2 in 353 s). Four epochs underfit,
        # so no dropout; 512 sampled words gave a higher loss (epoch 1: 5.76 against 5.71).
        "quick": {"epochs": 4, "batch_size": 64, "learning_rate": 3e-3, "lr_decay": 0.7,
                  "layers": 1, "embedding_dim": 200, "units": 200, "dropout": 0.0,
                  "embedding_dropout": 0.0, "sampled_words": 1024, "early_stopping_patience": 1},
        # Measured on WikiText-2 (docs/language_model.md): 16 epochs of 279-357 s within
        # max_minutes=88, test perplexity 110.0 (the earlier full profile, batch 64, dropout
        # 0.3, no recurrent dropout: 114.9, its validation loss flat from epoch 6). Batch 128
        # reads 1.24x the tokens a second; recurrent dropout (free here) keeps the loss falling.
        # Zaremba's medium (2 x 650, exact softmax) costs ~36 min an epoch on these cores.
        # Averaging the weights (ema_momentum 0.999, about the last two epochs' steps): 107.2
        # in 15 epochs against 110.0 in 16 without (each update costs ~5-10% of a step).
        "full": {"epochs": 30, "batch_size": 128, "learning_rate": 3e-3, "lr_decay": 0.9,
                 "layers": 2, "embedding_dim": 400, "units": 400, "dropout": 0.4,
                 "embedding_dropout": 0.1, "recurrent_dropout": 0.25, "sampled_words": 1024,
                 "early_stopping_patience": 3, "max_minutes": 88, "ema_momentum": 0.999},
    }

    def __init__(self) -> None:
        import models.language_model  # noqa: F401 - registers TiedEmbedding with Keras

        self._vocabularies: dict[tuple, list[str]] = {}
        self._told: set[tuple[str, str]] = set()
        self._line_counts: dict[tuple, int] = {}

    # --- data -----------------------------------------------------------------------------

    def _rows(self, config: Any, part: str) -> Iterator[str]:
        """The texts of a part's rows (see data_files.part_source for which rows)."""
        source, split, held_out = data_files.part_source(config, part)
        texts = self._source_texts(config, source, split)
        if held_out is not None and config.documents == "running":
            # Running text is held out in passages of consecutive lines: lines held out one by
            # one would splice both parts every few lines (a validation line's context would
            # be another line's).
            size = self._passage_lines(config, source, split)
            texts = (t for number, t in enumerate(texts)
                     if data_files.in_validation(f"passage {number // size}",
                                                 config.validation_fraction, config.seed)
                     == held_out)
        elif held_out is not None:
            texts = (t for t in texts
                     if data_files.in_validation(t, config.validation_fraction, config.seed)
                     == held_out)
        limit = config.max_train_examples if part != "test" else config.max_eval_examples
        if limit is not None:
            texts = itertools.islice(texts, limit)
        return texts

    def _passage_lines(self, config: Any, source: str, split: str) -> int:
        """Lines per held-out passage of running text: 1/PASSAGES of the source's lines (so a
        small file is still split about validation_fraction), at most MAX_PASSAGE_LINES."""
        path = Path(source)
        key = (source, split, config.text_column,
               path.stat().st_mtime_ns if path.is_file() else None)  # a file edited since
        if key not in self._line_counts:
            self._line_counts[key] = sum(1 for _ in self._source_texts(config, source, split))
        return max(1, min(MAX_PASSAGE_LINES, self._line_counts[key] // PASSAGES))

    def _source_texts(self, config: Any, source: str, split: str) -> Iterator[str]:
        """Every row's text of a source's split, in file order."""
        named = data_files.named_dataset(source)
        column = config.text_column
        formats = (*text_corpus.TEXT_FORMATS, *data_files.TABLE_FORMATS)
        if source == "imdb":
            # IMDB's LM data: the 25k training and 50k unlabelled reviews; its test reviews
            # only ever as the test part (`evaluate`), never trained on.
            rows = self._imdb_rows("train+unsupervised" if split == "train" else split)
        elif named is not None:
            if named.kind not in ("language_model", "classify"):
                raise UserError(f"data set {source!r} is for {named.kind} tasks, not running "
                                "text", "pass a .txt/.csv/.jsonl file, wikitext2 or imdb")
            rows = named.rows(split, [column])
        elif data_files.file_format(source, formats) in text_corpus.TEXT_FORMATS:
            if column != TEXT_COLUMN and (source, column) not in self._told:
                # A plain-text file has no columns; say so rather than ignore the flag.
                self._told.add((source, column))
                log.warning("%s is plain text, one document per line: the text column %r "
                            "applies to .csv/.tsv/.jsonl files only, not to it", source, column)
            rows = text_corpus.iter_text_lines(source, column)
        else:
            rows = data_files.iter_table(source, [column])
        return (row[column] for _, row in rows)

    @staticmethod
    def _imdb_rows(split: str) -> Iterator[tuple[int, dict]]:
        from pipelines.datasets.imdb import prepare

        data = prepare().as_dataset(split=split, shuffle_files=False)
        for number, example in enumerate(data.as_numpy_iterator(), start=1):
            yield number, {"text": example["text"].decode("utf-8")}

    def _tokens(self, config: Any, part: str) -> Iterator[str]:
        return text_corpus.token_stream(self._rows(config, part), resolved_tokenize(config),
                                        config.documents)

    def vocabulary(self, config: Any) -> list[str]:
        """The training part's vocabulary, counted once per data settings.

        Args:
            config: the run's config.
        """
        key = (*data_files.data_key(config, ("text_column",)), config.documents,
               config.tokenize, config.max_tokens)
        if key not in self._vocabularies:
            counts = collections.Counter(self._tokens(config, "train"))
            where = data_files.part_label(config, "train")
            if not counts or set(counts) == {text_corpus.END}:
                raise UserError(f"{where} has no words", "pass a file with text in it"
                                + ("" if str(config.data).endswith(".txt")
                                   else f" (in column {config.text_column!r})"))
            words = text_corpus.build_vocabulary(counts, config.max_tokens)
            covered = sum(counts[w] for w in words) / sum(counts.values())
            log.info("%s: %d tokens, %d distinct; vocabulary %d covers %.1f%%", where,
                     sum(counts.values()), len(counts), len(words), 100 * covered)
            self._vocabularies[key] = words
        return self._vocabularies[key]

    def corpus(self, config: Any, part: str, vocabulary: list[str]) -> np.ndarray:
        """A part's token ids, in order.

        Args:
            config: the run's config.
            part: `train`, `validation` or `test`.
            vocabulary: the model's vocabulary.
        """
        return text_corpus.to_ids(self._tokens(config, part), vocabulary)

    def _stream(self, config: Any, part: str, vocabulary: list[str], rows: int) -> np.ndarray:
        """A part as `rows` contiguous rows, with an error when it is shorter than one window."""
        ids = self.corpus(config, part, vocabulary)
        window = config.tbptt_steps
        needed = rows * (window + 1)
        if len(ids) < needed:
            where = data_files.part_label(config, part)
            fix = "give more text, or lower --set batch_size=... / tbptt_steps=..."
            if len(ids) == 0 and data_files.part_source(config, part)[2]:
                # The held-out rows are picked by a hash of their text: few distinct lines
                # may give none.
                fix += ", or pass --validation-data FILE"
            raise UserError(f"{where} has {len(ids)} tokens, fewer than one BPTT window of "
                            f"{rows} rows x {window + 1} tokens = {needed}", fix)
        return text_corpus.batchify(ids, rows)

    def datasets(self, config: TrainConfig) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        import tensorflow as tf

        config.validate()
        data_files.check_part_exists(config, "test", ("text_column",))
        words = self.vocabulary(config)
        train = self._stream(config, "train", words, config.batch_size)
        val = self._stream(config, "validation", words, config.batch_size)
        log.info("training stream: %d rows x %d tokens, windows of %d", *train.shape,
                 config.tbptt_steps)
        # One element, the whole stream: tbptt cuts it into windows and carries the state.
        train_data = tf.data.Dataset.from_tensors((train[:, :-1, None], train[:, 1:]))
        # Validation during training: windows from zero states (a quick monitor; `evaluate`
        # carries the state across the whole split).
        window = config.tbptt_steps
        count = (val.shape[1] - 1) // window
        inputs = val[:, :count * window].reshape(len(val), count, window).transpose(1, 0, 2)
        targets = val[:, 1:count * window + 1].reshape(len(val), count, window).transpose(1, 0, 2)
        val_data = tf.data.Dataset.from_tensor_slices((inputs[..., None], targets))
        return train_data, val_data

    # --- model ----------------------------------------------------------------------------

    def build_model(self, config: TrainConfig) -> keras.Model:
        from models.language_model import build_language_model

        config.validate()
        return build_language_model(
            self.vocabulary(config), cell=config.cell, embedding_dim=config.embedding_dim,
            units=config.units, layers=config.layers, dropout=config.dropout,
            embedding_dropout=config.embedding_dropout,
            recurrent_dropout=config.recurrent_dropout, seed=config.seed,
            sampled_words=config.sampled_words, name=f"language_model_{config.cell}")

    def loss(self, config: TrainConfig) -> Any:
        import keras

        # Shown in the compiled config only: models.language_model.LanguageModel.compute_loss
        # scores the hidden states against the tied embedding (exact or sampled softmax).
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # --- evaluation -----------------------------------------------------------------------

    def score_stream(self, model: keras.Model, ids: np.ndarray, cache_size: int = 0,
                     thetas: tuple[float, ...] = CACHE_THETAS) -> dict[str, Any]:
        """Exact perplexity and top-1/top-5 accuracy of a part, the state carried throughout.

        With a cache, also `cache_nll`: the mean negative log-likelihood with the continuous
        cache (models.neural_cache) for every pair of `thetas` x CACHE_LAMBDAS [thetas,
        lambdas], each stream remembering its own last `cache_size` steps.

        Args:
            model: a language model.
            ids: the part's token ids.
            cache_size: steps the cache remembers; 0 for no cache.
            thetas: the cache's flatness values to try (each costs about a plain pass).
        """
        import numpy as np
        import tensorflow as tf

        from models import neural_cache
        from models.language_model import hidden_states, negative_log_likelihood, zero_states

        embedding = model.get_layer("embedding")
        stream = text_corpus.batchify(ids, EVAL_ROWS)
        states = zero_states(model, EVAL_ROWS)
        memory = neural_cache.empty_memory(EVAL_ROWS, max(cache_size, 1), embedding.dim)
        theta_values = tf.constant(thetas, tf.float32)
        lambdas = tf.constant(CACHE_LAMBDAS)
        carried = [states, memory]
        flat_spec = [tf.TensorSpec(s.shape, s.dtype) for s in tf.nest.flatten(carried)]

        @tf.function(input_signature=[tf.TensorSpec([EVAL_ROWS, None], tf.int32),
                                      tf.TensorSpec([EVAL_ROWS, None], tf.int32),
                                      tf.TensorSpec([], tf.int32), flat_spec],
                     autograph=False)
        def window(x, y, start, flat):
            states, memory = tf.nest.pack_sequence_as(carried, flat)
            hidden, new = hidden_states(model, x, states)
            logits = embedding(hidden, scores=True)
            nll = negative_log_likelihood(logits, y)
            top5 = tf.math.top_k(logits, k=min(5, len(embedding.vocabulary)))
            hits = tf.equal(top5.indices, y[..., None])
            if cache_size:
                cache_log_p, has_cache, memory = neural_cache.cache_log_probabilities(
                    hidden, y, start, memory, theta_values)
                mixed = neural_cache.mix(-nll, cache_log_p, has_cache, lambdas)
                cache_nll = -tf.reduce_sum(tf.cast(mixed, tf.float64), axis=[2, 3])
            else:
                cache_nll = tf.zeros([len(thetas), len(CACHE_LAMBDAS)], tf.float64)
            return (tf.reduce_sum(tf.cast(nll, tf.float64)),
                    tf.reduce_sum(tf.cast(hits[..., 0], tf.int64)),
                    tf.reduce_sum(tf.cast(tf.reduce_any(hits, axis=-1), tf.int64)),
                    cache_nll, tf.nest.flatten([new, memory]))

        flat = tf.nest.flatten(carried)
        total = top1 = top5 = count = 0
        cache_total = np.zeros([len(thetas), len(CACHE_LAMBDAS)])
        for start in range(0, stream.shape[1] - 1, EVAL_WINDOW):
            x = stream[:, start:start + EVAL_WINDOW]
            y = stream[:, start + 1:start + EVAL_WINDOW + 1]
            x = x[:, :y.shape[1]]
            nll, hit1, hit5, cache_nll, flat = window(x, y, tf.constant(start, tf.int32), flat)
            total += float(nll)
            cache_total += cache_nll.numpy()
            top1, top5, count = top1 + int(hit1), top5 + int(hit5), count + y.size
        if count == 0:
            return {"perplexity": float("nan"), "top1_accuracy": 0.0, "top5_accuracy": 0.0,
                    "tokens": 0}
        scores: dict[str, Any] = {"perplexity": float(np.exp(total / count)),
                                  "top1_accuracy": top1 / count, "top5_accuracy": top5 / count,
                                  "tokens": count}
        if cache_size:
            scores["cache_nll"] = cache_total / count
        return scores

    def evaluate(self, model: keras.Model, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
        import numpy as np

        from models.language_model import vocabulary
        from pipelines.tasks.ngram_baselines import bigram_kneser_ney, pairs, unigram

        words = vocabulary(model)
        # The run's own text (the baselines' counts, validation) is read as it trained; the
        # test part as this evaluation describes it.
        trained = self.trained_config(config, run_dir)
        train_ids = self.corpus(trained, "train", words)
        cache_size = getattr(config, "cache_size", 0)
        ids = {}
        for part, part_config in (("validation", trained), ("test", config)):
            ids[part] = self.corpus(part_config, part, words)
            if len(ids[part]) < 2 * EVAL_ROWS:
                raise UserError(f"{data_files.part_label(part_config, part)} has "
                                f"{len(ids[part])} tokens, too few to score in {EVAL_ROWS} "
                                "streams", "give more text to evaluate on")
        validation = self.score_stream(model, ids["validation"], cache_size)
        report: dict[str, Any] = {}
        grid = validation.pop("cache_nll", None)
        if grid is not None:
            # theta and lambda are picked on validation text; the test split sees only them.
            theta, weight = np.unravel_index(np.argmin(grid), grid.shape)
            test = self.score_stream(model, ids["test"], cache_size, (CACHE_THETAS[theta],))
            report["cache"] = {
                "perplexity": float(np.exp(test.pop("cache_nll")[0, weight])),
                "validation_perplexity": float(np.exp(grid[theta, weight])),
                "size": cache_size, "theta": CACHE_THETAS[theta],
                "lambda": CACHE_LAMBDAS[weight]}
        else:
            test = self.score_stream(model, ids["test"])
        report = {**test, "validation_perplexity": validation["perplexity"], **report}
        # The baselines score the same (previous, next) pairs the model predicted.
        previous, following = pairs(text_corpus.batchify(ids["test"], EVAL_ROWS))
        report["baselines"] = {
            "unigram_perplexity": unigram(train_ids, len(words), following),
            "kneser_ney_bigram_perplexity": bigram_kneser_ney(
                train_ids, len(words), previous, following),
        }
        report["unknown_rate"] = float((ids["test"] == 0).mean())
        report["vocabulary"] = len(words)
        report["data"] = data_files.part_label(config, "test")
        for key in ("perplexity", "validation_perplexity"):
            if not math.isfinite(report[key]):
                raise UserError(f"the model's {key} is not finite", "retrain with a lower "
                                "learning rate (--set learning_rate=1e-4)")
        return report

    # --- export ---------------------------------------------------------------------------

    def serving_signatures(self, model: keras.Model, config: TrainConfig,
                           run_dir: Path | None = None) -> dict[str, Any]:
        import tensorflow as tf

        from models.language_model import (
            EMBEDDING,
            generate,
            hidden_states,
            vocabulary,
            zero_states,
        )
        from models.text_bounds import CHARS_PER_TOKEN, check_batch_size, cut_tokens

        words = vocabulary(model)
        vocab = tf.constant(words)
        tokenize = resolved_tokenize(config)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(vocab, tf.range(len(words), dtype=tf.int32)),
            default_value=0)
        # Kept on the model so the SavedModel tracks the table the signatures use.
        model._rnnkit_vocabulary_table = table
        end = words.index(text_corpus.END)

        limit = config.max_input_tokens

        def prompt_ids(text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # Each prompt starts after an <eos> (a document's start, as in training), so an
            # empty prompt has one step too; unknown words are <unk>, never an error.
            text = check_batch_size(text, config.max_request_texts)
            # The words nearest the continuation matter: keep the end of a long prompt (its
            # last characters first, so a huge prompt is never split in full).
            length = tf.strings.length(text, unit="UTF8_CHAR")
            keep = limit * CHARS_PER_TOKEN
            text = tf.strings.substr(text, tf.maximum(length - keep, 0),
                                     tf.fill(tf.shape(length), keep), unit="UTF8_CHAR")
            tokens = cut_tokens(text_corpus.tf_words(text, tokenize)[:, -limit:])
            ids = tf.ragged.map_flat_values(table.lookup, tokens)
            starts = tf.fill([tf.shape(text)[0], 1], end)
            ids = tf.concat([tf.RaggedTensor.from_tensor(starts), ids], axis=1)
            # At least one step even for an empty batch (whose widest row is no row).
            width = tf.maximum(tf.cast(tf.reduce_max(tf.concat(
                [ids.row_lengths(), [1]], axis=0)), tf.int32), 1)
            dense = ids.to_tensor(0, shape=tf.stack([tf.shape(text)[0], width]))
            return dense, tf.sequence_mask(ids.row_lengths(), maxlen=width)

        def continuation(text, temperature, top_k, seed, count):
            n = tf.size(text)
            # Each check says only what is wrong: with --enable_batching a request shares its
            # run with other clients', whose values an assert_* message would print.
            checks = [
                tf.debugging.Assert(
                    (tf.rank(value) == 1) & (tf.size(value) == n),
                    [f"{name} must hold one value per text (shape [batch], like text)"])
                for name, value in (("temperature", temperature), ("top_k", top_k),
                                    ("seed", seed), ("words", count))]
            with tf.control_dependencies(checks):
                checks = [tf.debugging.Assert(condition, [message]) for condition, message in (
                    (tf.reduce_all(temperature > 0), "temperature must be > 0"),
                    (tf.reduce_all(tf.math.is_finite(temperature)),
                     "temperature must be a finite number"),
                    (tf.reduce_all(top_k >= 1), "top_k must be >= 1"),
                    (tf.reduce_all(count >= 0), "words must be >= 0"),
                    (tf.reduce_all(count <= MAX_WORDS), f"words must be <= {MAX_WORDS}"))]
            with tf.control_dependencies(checks):
                ids, mask = prompt_ids(text)
                chosen = generate(model, ids, mask, temperature, top_k, seed, count,
                                  stop_id=end, banned_id=0)
            kept = tf.ragged.boolean_mask(tf.gather(vocab, chosen), chosen != end)
            return {"continuation": tf.strings.reduce_join(kept, axis=1, separator=" ")}

        string = tf.TensorSpec([None], tf.string, name="text")

        @tf.function(input_signature=[string], autograph=False)
        def serving_default(text: tf.Tensor) -> dict[str, tf.Tensor]:
            n = tf.shape(text)[0]
            return continuation(text, tf.ones([n]), tf.ones([n], tf.int32),
                                tf.zeros([n], tf.int64),
                                tf.fill([n], tf.constant(config.generate_words, tf.int32)))

        @tf.function(input_signature=[
            string, tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([None], tf.int32, name="top_k"),
            tf.TensorSpec([None], tf.int64, name="seed"),
            tf.TensorSpec([None], tf.int32, name="words")], autograph=False)
        def sample(text, temperature, top_k, seed, words):
            return continuation(text, temperature, top_k, seed, words)

        @tf.function(input_signature=[string], autograph=False)
        def next_words(text: tf.Tensor) -> dict[str, tf.Tensor]:
            ids, mask = prompt_ids(text)
            outputs, _ = hidden_states(model, ids, zero_states(model, tf.shape(ids)[0]), mask)
            # Only the last word's scores are wanted: score that step alone.
            p = tf.nn.softmax(model.get_layer(EMBEDDING)(outputs[:, -1], scores=True))
            # <unk> and <eos> (ids 0 and 1) are no words to offer: a keyboard would type them.
            best = tf.math.top_k(tf.concat([tf.zeros_like(p[:, :2]) - 1.0, p[:, 2:]], 1),
                                 k=min(NEXT_WORDS, len(words) - 2))
            return {"words": tf.gather(vocab, best.indices), "probabilities": best.values}

        return {"serving_default": serving_default, "generate": sample,
                "next_words": next_words}

    def export_metadata(self, config: TrainConfig, run_dir: Path | None) -> dict[str, Any]:
        return {"data": config.data, "tokenize": resolved_tokenize(config),
                "documents": config.documents, "generate_words": config.generate_words,
                "max_words": MAX_WORDS, "next_words": NEXT_WORDS,
                "max_input_tokens": config.max_input_tokens,
                "max_request_texts": config.max_request_texts}

    def warmup_requests(self) -> list[Any]:
        from serving.export import predict_log

        return [predict_log({"text": list(WARMUP_TEXTS)}, model_name=self.export_name),
                predict_log({"text": list(WARMUP_TEXTS)}, signature_name="next_words",
                            model_name=self.export_name)]
