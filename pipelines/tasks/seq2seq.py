"""`seq2seq`: text -> text from a user's file of pairs (or a named data set such as `spa_eng`).

Many-to-many through an encoder-decoder: the attentional translator (models.translation: a
bidirectional recurrent encoder, additive or multiplicative attention, a recurrent decoder with
greedy and beam search in the graph), trained on any pair of text columns: translation, summaries,
normalisation. Rows stream from the file (pipelines.datasets.data_files); one scan drops and counts
rows with an empty side and rejects what cannot train; the standardised pairs are cached in memory
for the epochs. Evaluation translates every distinct source of the test part once and scores it
against all of its targets with sacreBLEU (BLEU and chrF). The `translation` preset
(pipelines/tasks/translation.py) is this task on `spa_eng`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.config import TrainConfig
from pipelines.datasets import data_files
from pipelines.training.run_dir import scored_name
from pipelines.training.task import Task
from serving.errors import UserError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

log = logging.getLogger("pipelines.tasks.seq2seq")

ATTENTION_PLOT = "attention.png"
ATTENTION_SIGNATURE = "translate_with_attention"


@dataclasses.dataclass
class Seq2SeqConfig(data_files.DataFilesConfig):
    """Settings of the encoder-decoder (and TrainConfig's).

    Args:
        data: training pairs: a .csv/.tsv/.jsonl file (optionally .gz) or a data set name.
        validation_data: validation file; empty holds out validation_fraction of `data` (or
            takes a named data set's validation split).
        test_data: test file `rnnkit evaluate` scores; empty for a named data set's test split.
        source_column: the column holding the input text.
        target_column: the column holding the output text.
        max_empty_fraction: rows with an empty side are dropped and counted; above this share
            of the training rows, training stops with an error instead.
        embedding_dim: size of the source and target token embeddings.
        units: size of each direction of the bidirectional encoder; the decoder has twice this.
        cell: recurrent cell of encoder and decoder: lstm, gru or rnn.
        attention: attention score: additive (Bahdanau) or multiplicative (Luong).
        dropout: dropout on embeddings and on the decoder's attentional output.
        source_vocab_size: source vocabulary size, padding and [UNK] included.
        target_vocab_size: target vocabulary size, padding, [UNK], [START] and [END] included.
        max_sentence_tokens: training pairs with a longer side (in tokens) are skipped.
        max_validation_examples: validate on this many pairs of the validation part only.
        beam_width: 1 decodes greedily, more uses beam search (evaluation and export).
        length_penalty: beam hypotheses are ranked by log-prob / length**length_penalty.
        max_output_length: most tokens an output may have.
        max_input_tokens: the export reads at most this many tokens of each sentence (the rest
            is cut inside the graph; recorded in the export's metadata).
        max_request_texts: the export refuses requests of more sentences (INVALID_ARGUMENT).
        eval_batch_size: sentences translated at once in evaluation.
        samples: sample outputs listed in the evaluation result.
        heatmaps: test sentences drawn in the attention heat map.
    """

    source_column: str = "source"
    target_column: str = "target"
    max_empty_fraction: float = 0.1
    embedding_dim: int = 128
    units: int = 128
    cell: str = "gru"
    attention: str = "additive"
    dropout: float = 0.2
    source_vocab_size: int = 8000
    target_vocab_size: int = 6000
    max_sentence_tokens: int = 24
    max_validation_examples: int | None = None
    beam_width: int = 4
    length_penalty: float = 1.0
    max_output_length: int = 50
    max_input_tokens: int = 100
    max_request_texts: int = 64
    eval_batch_size: int = 128
    samples: int = 8
    heatmaps: int = 3

    def validate(self) -> None:
        super().validate()
        from models.translation import ATTENTION_SCORES

        self.check_cell()
        self.check_choice("attention", ATTENTION_SCORES, "an attention score")
        self.check_at_least_one("embedding_dim", "units", "source_vocab_size",
                                "target_vocab_size", "max_sentence_tokens", "beam_width",
                                "max_output_length", "eval_batch_size", "max_input_tokens",
                                "max_request_texts")
        self.check_rates("dropout")
        self.check_shares("max_empty_fraction")
        for name in ("source_vocab_size", "target_vocab_size"):
            if getattr(self, name) < 8:
                raise UserError(f"{name}={getattr(self, name)} is too small: the vocabulary "
                                "holds padding, [UNK], [START] and [END] besides words",
                                f"pass e.g. --set {name}=4000")


PROFILES: dict[str, dict[str, Any]] = {
    # For a few thousand to a few tens of thousands of short pairs on 2 CPU cores.
    "quick": {"epochs": 6, "batch_size": 64, "learning_rate": 3e-3,
              "early_stopping_patience": 2, "embedding_dim": 96, "units": 96,
              "source_vocab_size": 6000, "target_vocab_size": 4000, "max_sentence_tokens": 24,
              "dropout": 0.1},
    "full": {"epochs": 12, "batch_size": 128, "learning_rate": 2e-3,
             "early_stopping_patience": 3, "embedding_dim": 128, "units": 128,
             "dropout": 0.2, "source_vocab_size": 12000, "target_vocab_size": 8000,
             "max_sentence_tokens": 32, "beam_width": 5},
}


def group_references(pairs: list[tuple[str, str]]
                     ) -> tuple[list[str], list[list[str]], list[int]]:
    """Unique sources (first-seen order), every target of each, and the source index of each
    pair.

    Sources are compared as spa_eng's splits compare them (NFC, lower case, single spaces), so
    a source listed with several targets is translated once and scored against all of them.

    Args:
        pairs: (source, target) pairs.
    """
    from pipelines.datasets.spa_eng import split_key

    order: dict[str, int] = {}
    sources: list[str] = []
    references: list[list[str]] = []
    pair_source: list[int] = []
    for source, target in pairs:
        key = split_key(source)
        if key not in order:
            order[key] = len(sources)
            sources.append(source)
            references.append([])
        references[order[key]].append(target)
        pair_source.append(order[key])
    return sources, references, pair_source


def corpus_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, Any]:
    """Case-insensitive corpus BLEU and chrF (sacreBLEU) with any number of references each.

    Args:
        hypotheses: one output per source.
        references: the reference targets of each source.
    """
    import sacrebleu

    most = max(len(r) for r in references)
    # sacreBLEU takes reference streams; None fills the streams of sources with fewer refs.
    streams = [[r[i] if i < len(r) else None for r in references] for i in range(most)]
    bleu = sacrebleu.metrics.BLEU(lowercase=True)
    chrf = sacrebleu.metrics.CHRF(lowercase=True)
    bleu_score = bleu.corpus_score(hypotheses, streams)
    chrf_score = chrf.corpus_score(hypotheses, streams)
    return {"bleu": round(bleu_score.score, 2), "chrf": round(chrf_score.score, 2),
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature())}


def plot_attention(items: list[dict[str, Any]], path: Path, source_name: str = "source",
                   target_name: str = "output") -> None:
    """Draw one attention heat map per sentence into a PNG.

    Args:
        items: dicts with translation (str), source_tokens, output_tokens (lists of str) and
            attention ([output, source] array), as Translator.translate_with_attention returns
            them for one sentence.
        path: the PNG to write.
        source_name: the x axis label (e.g. Spanish).
        target_name: the y axis label (e.g. English).
    """
    from pipelines.training.plots import pyplot, save_figure

    plt = pyplot()

    fig, axes = plt.subplots(1, len(items), figsize=(4.5 * len(items), 4.5), squeeze=False)
    for ax, item in zip(axes[0], items, strict=True):
        ax.imshow(item["attention"], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(item["source_tokens"])), item["source_tokens"], rotation=90)
        ax.set_yticks(range(len(item["output_tokens"])), item["output_tokens"])
        ax.set_xlabel(source_name)
        ax.set_ylabel(target_name)
        ax.set_title(item["translation"], fontsize=10)
    save_figure(fig, path)


class Seq2SeqTask(Task):
    """Text in, text out with an attentional encoder-decoder, on a user's pairs."""

    name: ClassVar[str] = "seq2seq"
    dataset: ClassVar[str] = ""
    export_name: ClassVar[str] = "seq2seq"
    config_class: ClassVar[type[TrainConfig]] = Seq2SeqConfig
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES
    fields: ClassVar[tuple[str, str]] = ("source_column", "target_column")
    # Sentences drawn in the attention plot besides a few test sources, and sent as warm-up
    # requests (any text does for those).
    example_sentences: ClassVar[tuple[str, ...]] = ()
    warmup_sentences: ClassVar[tuple[str, ...]] = ("hello world",)
    # Axis names of the attention plot.
    source_name: ClassVar[str] = "source"
    target_name: ClassVar[str] = "output"

    def __init__(self) -> None:
        # Registers Translator with Keras, so checkpoints load before the model is ever built.
        import models.translation  # noqa: F401

        self._vectorizers: dict[tuple, tuple[Any, Any]] = {}
        self._scans: dict[tuple, int] = {}

    # --- data -----------------------------------------------------------------------------

    def rows(self, config: Any, part: str, limit: int | None = None
             ) -> Iterator[tuple[int, str, str]]:
        """(line, source, target) of a part's rows, empty sides included, in file order.

        Args:
            config: the run's config.
            part: `train`, `validation` or `test`.
            limit: the first this many rows only.
        """
        rows = data_files.iter_part(config, part, self.fields,
                                    key=lambda r: next(iter(r.values())))
        for count, (line, row) in enumerate(rows):
            if limit is not None and count >= limit:
                return
            source, target = row.values()
            yield line, source, target

    def scan(self, config: Any, part: str, limit: int | None = None) -> int:
        """One pass over a part: the rows kept, with every data error raised before training.

        Rows with an empty source or target are dropped and counted; too many of them, or none
        left, is an error naming the file.

        Args:
            config: the run's config.
            part: `train`, `validation` or `test`.
            limit: the first this many rows only.
        """
        key = (part, config.data, config.validation_data, config.test_data,
               config.source_column, config.target_column, limit, config.seed,
               config.validation_fraction)
        if key in self._scans:
            return self._scans[key]
        where = data_files.part_label(config, part)
        rows = empty = 0
        for _, source, target in self.rows(config, part, limit):
            if source.strip() and target.strip():
                rows += 1
            else:
                empty += 1
        if rows == 0:
            raise UserError(f"{where} has no pairs" + (f" left after dropping {empty} with an "
                                                       "empty side" if empty else ""),
                            f"pass a file with source text in {config.source_column!r} and "
                            f"target text in {config.target_column!r}")
        data_files.drop_empty_rows(where, empty, rows, config.max_empty_fraction,
                                   "an empty source or target",
                                   "--source-column and --target-column",
                                   enforce=part == "train")
        self._scans[key] = rows
        return rows

    def pairs(self, config: Any, part: str, limit: int | None = None) -> list[tuple[str, str]]:
        """A part's raw (source, target) pairs without empty ones, in file order.

        Args:
            config: the run's config.
            part: `train`, `validation` or `test`.
            limit: the first this many rows only.
        """
        self.scan(config, part, limit)
        return [(s, t) for _, s, t in self.rows(config, part, limit) if s.strip() and t.strip()]

    def standardized_pairs(self, config: Any, part: str, limit: int | None = None
                           ) -> tf.data.Dataset:
        """(source, "[START] target [END]") standardised string pairs of a part, streamed.

        Args:
            config: the run's config.
            part: `train`, `validation` or `test`.
            limit: the first this many rows only.
        """
        import tensorflow as tf

        from models.translation_text import add_start_end, standardize

        self.scan(config, part, limit)

        def generate() -> Iterator[tuple[str, str]]:
            for _, source, target in self.rows(config, part, limit):
                if source.strip() and target.strip():
                    yield source, target

        raw = tf.data.Dataset.from_generator(
            generate, output_signature=(tf.TensorSpec([], tf.string),
                                        tf.TensorSpec([], tf.string)))
        return (raw.batch(1024).map(lambda s, t: (standardize(s), add_start_end(standardize(t))),
                                    num_parallel_calls=tf.data.AUTOTUNE).unbatch())

    def vectorizers(self, config: Any) -> tuple[Any, Any]:
        """Source and target TextVectorization adapted on the training pairs in use (memoised).

        Args:
            config: the data, max_train_examples and the vocabulary sizes.
        """
        from models.translation_text import make_vectorizer

        key = (config.data, config.source_column, config.target_column,
               config.validation_data, config.validation_fraction, config.seed,
               config.max_train_examples, config.source_vocab_size, config.target_vocab_size)
        if key not in self._vectorizers:
            started = time.monotonic()
            pairs = self.standardized_pairs(config, "train", config.max_train_examples).cache()
            source = make_vectorizer(pairs.map(lambda s, t: s).batch(1024),
                                     config.source_vocab_size)
            target = make_vectorizer(pairs.map(lambda s, t: t).batch(1024),
                                     config.target_vocab_size)
            log.info("vocabularies: %d source, %d target tokens (%.1f s)",
                     source.vocabulary_size(), target.vocabulary_size(),
                     time.monotonic() - started)
            self._vectorizers[key] = (source, target)
        return self._vectorizers[key]

    def _id_pairs(self, config: Any, part: str, limit: int | None) -> tf.data.Dataset:
        """((source_ids, target_in_ids), target_out_ids) per pair, unbatched."""
        source_vectorizer, target_vectorizer = self.vectorizers(config)

        def to_ids(source, target):
            source, target = source_vectorizer(source), target_vectorizer(target)
            return (source.to_tensor(), source.row_lengths(), target.to_tensor(),
                    target.row_lengths())

        def split_target(source, source_len, target, target_len):
            return (source[:source_len], target[:target_len - 1]), target[1:target_len]

        # Vectorizing whole batches is fast; unbatched rows are cut back to their own length.
        return (self.standardized_pairs(config, part, limit).batch(1024).map(to_ids).unbatch()
                .map(split_target))

    def datasets(self, config: TrainConfig) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        """Training pairs bucketed by length, and the validation part's pairs."""
        import tensorflow as tf

        config.validate()
        data_files.check_part_exists(config, "test", self.fields)
        longest = config.max_sentence_tokens
        train = self._id_pairs(config, "train", config.max_train_examples).filter(
            lambda x, y: (tf.size(x[0]) <= longest) & (tf.size(y) <= longest + 1)).cache()
        # One pass (which fills the cache) counts what the length limit left out: all of it
        # would train on nothing.
        kept = int(train.reduce(0, lambda n, _: n + 1))
        rows = self.scan(config, "train", config.max_train_examples)
        where = data_files.part_label(config, "train")
        if kept == 0:
            raise UserError(f"{where}: all {rows} pairs are longer than max_sentence_tokens="
                            f"{longest} tokens on a side",
                            "raise it, e.g. --set max_sentence_tokens=64, or give shorter pairs")
        if kept < rows:
            log.info("%s: left out %d of %d pairs longer than max_sentence_tokens=%d",
                     where, rows - kept, rows, longest)
        # Batches of similar lengths waste little time on padding.
        bounds = [b for b in (6, 8, 10, 12, 16, 20, 24, 32) if b < longest + 2]
        train = train.shuffle(20000, seed=config.seed, reshuffle_each_iteration=True)
        train = train.bucket_by_sequence_length(
            lambda x, y: tf.maximum(tf.size(x[0]), tf.size(y)), bounds,
            [config.batch_size] * (len(bounds) + 1)).prefetch(tf.data.AUTOTUNE)
        validation = self._id_pairs(config, "validation", config.max_validation_examples)
        validation = validation.padded_batch(config.batch_size).cache().prefetch(
            tf.data.AUTOTUNE)
        return train, validation

    # --- model ----------------------------------------------------------------------------

    def build_model(self, config: TrainConfig) -> keras.Model:
        from models.translation import Translator

        config.validate()
        source, target = self.vectorizers(config)
        model = Translator(source.get_vocabulary(), target.get_vocabulary(),
                           embedding_dim=config.embedding_dim, units=config.units,
                           cell=config.cell, attention=config.attention, dropout=config.dropout)
        model.build()
        return model

    def loss(self, config: TrainConfig) -> Any:
        import keras

        # ignore_class masks the padding after each sentence's [END].
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)

    def metrics(self, config: TrainConfig) -> list[Any]:
        from models.translation import MaskedTokenAccuracy

        return [MaskedTokenAccuracy()]

    def translator(self, model: keras.Model, config: Any, beam_width: int) -> Any:
        """A graph-compiled function translating a batch of raw source strings.

        Args:
            model: a Translator.
            config: search settings.
            beam_width: 1 for greedy search.
        """
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def translate(text):
            return model.translate(text, beam_width, config.max_output_length,
                                   config.length_penalty)
        return translate

    def translate_all(self, model: keras.Model, config: Any, sentences: list[str],
                      beam_width: int) -> list[str]:
        """Translate raw source sentences in batches of config.eval_batch_size.

        Args:
            model: a Translator.
            config: search settings and batch size.
            sentences: raw source sentences.
            beam_width: 1 for greedy search.
        """
        translate = self.translator(model, config, beam_width)
        out: list[str] = []
        for i in range(0, len(sentences), config.eval_batch_size):
            batch = sentences[i:i + config.eval_batch_size]
            out.extend(t.decode() for t in translate(batch).numpy())
        return out

    # --- evaluation -----------------------------------------------------------------------

    def evaluate(self, model: keras.Model, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
        pairs = self.pairs(config, "test", config.max_eval_examples)
        sources, references, pair_source = group_references(pairs)
        result: dict[str, Any] = {"data": data_files.part_label(config, "test"),
                                  "test_pairs": len(pairs), "test_sources": len(sources),
                                  "beam_width": config.beam_width}
        translations: list[str] = []
        for width in sorted({1, config.beam_width}):
            started = time.monotonic()
            translations = self.translate_all(model, config, sources, width)
            seconds = time.monotonic() - started
            scores = corpus_scores(translations, references)
            result["greedy" if width == 1 else f"beam{width}"] = {
                **scores, "seconds": round(seconds, 1),
                "sentences_per_s": round(len(sources) / max(seconds, 1e-9), 1)}
            log.info("beam width %d: BLEU %.2f chrF %.2f (%.1f s)", width, scores["bleu"],
                     scores["chrf"], seconds)
        # Headline numbers: the exported search (the last width), every reference per source;
        # also the usual one-pair-one-reference BLEU, each pair against its own target only.
        result["bleu"], result["chrf"] = scores["bleu"], scores["chrf"]
        result["bleu_single_reference"] = corpus_scores(
            [translations[i] for i in pair_source], [[t] for _, t in pairs])["bleu"]
        # What copying the source would score: the baseline a model must beat.
        result["copy_baseline"] = {key: value for key, value in corpus_scores(
            sources, references).items() if key in ("bleu", "chrf")}
        result["samples"] = [{"source": s, "references": r, "output": t}
                             for s, r, t in list(zip(sources, references, translations,
                                                     strict=True))[:config.samples]]
        result["attention_plot"] = str(self.write_attention_plot(model, config, sources,
                                                                 run_dir))
        return result

    def write_attention_plot(self, model: keras.Model, config: Any, sources: list[str],
                             run_dir: Path) -> Path:
        """Draw the attention of a few short test sentences into run_dir/attention.png
        (attention-<stem>.png for another scored file).

        Args:
            model: a Translator.
            config: search settings and how many sentences.
            sources: test sentences to pick from (the shortest are easiest to read).
            run_dir: where the PNG goes.
        """
        import tensorflow as tf

        picked = [s for s in sources if 4 <= len(s.split()) <= 8][:config.heatmaps]
        if not picked and not self.example_sentences:
            picked = sources[:1]
        items = []
        for sentence in [*self.example_sentences, *picked]:
            out = model.translate_with_attention(tf.constant([sentence]), config.beam_width,
                                                 config.max_output_length,
                                                 config.length_penalty)
            items.append({"translation": out["translation"][0].numpy().decode(),
                          "source_tokens": [t.decode() for t in out["source_tokens"][0].numpy()],
                          "output_tokens": [t.decode() for t in out["output_tokens"][0].numpy()],
                          "attention": out["attention"][0].numpy()})
        path = Path(run_dir) / scored_name(ATTENTION_PLOT, config.test_data)
        plot_attention(items, path, self.source_name, self.target_name)
        return path

    # --- export ---------------------------------------------------------------------------

    def serving_signatures(self, model: keras.Model, config: TrainConfig,
                           run_dir: Path | None = None) -> dict[str, Any]:
        import tensorflow as tf

        from models.text_bounds import check_batch_size

        search = (config.beam_width, config.max_output_length, config.length_penalty,
                  config.max_input_tokens)

        # `translation` is the translator's output name since its first export; `output_text`
        # is every text-producing model's (docs/app.md, "Model kinds").
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serving_default(text):
            output = model.translate(check_batch_size(text, config.max_request_texts), *search)
            return {"translation": output, "output_text": output}

        # Shape [None], not [1], so clients send a batch of one like any other request.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def translate_with_attention(text):
            return model.translate_with_attention(text, *search)

        return {"serving_default": serving_default,
                ATTENTION_SIGNATURE: translate_with_attention}

    def export_metadata(self, config: TrainConfig, run_dir: Path | None) -> dict[str, Any]:
        return {"data": config.data, "source_column": config.source_column,
                "target_column": config.target_column, "beam_width": config.beam_width,
                "max_input_tokens": config.max_input_tokens,
                "max_output_length": config.max_output_length,
                "max_request_texts": config.max_request_texts}

    def warmup_requests(self) -> list[Any]:
        from serving.export import predict_log

        sentences = list(self.example_sentences or self.warmup_sentences)
        return [predict_log({"text": sentences}, "serving_default", self.export_name),
                predict_log({"text": sentences[:1]}, ATTENTION_SIGNATURE, self.export_name)]
