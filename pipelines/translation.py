"""The Spanish -> English translation task: data, vocabularies, BLEU/chrF evaluation, serving."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.config import TrainConfig
from pipelines.tasks import Task

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

log = logging.getLogger("pipelines.translation")

# Spanish sentences whose attention is drawn in the run dir (besides a few from the test split).
HEATMAP_SENTENCES = ("¿Dónde está la biblioteca?",)
ATTENTION_PLOT = "attention.png"


@dataclasses.dataclass
class TranslationConfig(TrainConfig):
    """Translation settings on top of the shared ones (validation uses the builder's split).

    Args:
        embedding_dim: size of the source and target token embeddings.
        units: size of each direction of the bidirectional encoder; the decoder has twice this.
        cell: recurrent cell of encoder and decoder: lstm, gru or rnn.
        attention: attention score: additive (Bahdanau) or multiplicative (Luong).
        dropout: dropout on embeddings and on the decoder's attentional output.
        source_vocab_size: Spanish vocabulary size, padding and [UNK] included.
        target_vocab_size: English vocabulary size, padding, [UNK], [START] and [END] included.
        max_sentence_tokens: training pairs with a longer side (in tokens) are skipped.
        max_validation_examples: validate on this many pairs of the validation split only.
        beam_width: 1 decodes greedily, more uses beam search (evaluation and export).
        length_penalty: beam hypotheses are ranked by log-prob / length**length_penalty.
        max_output_length: most tokens a translation may have.
        eval_batch_size: sentences translated at once in evaluation.
        samples: sample translations listed in the evaluation result.
        heatmaps: test sentences drawn in the attention heat map (plus HEATMAP_SENTENCES).
    """

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
    eval_batch_size: int = 128
    samples: int = 8
    heatmaps: int = 3


PROFILES: dict[str, dict[str, Any]] = {
    # About 5 minutes of training on 2 CPU cores: 40k pairs, small GRUs, four epochs.
    "quick": {"epochs": 4, "batch_size": 128, "learning_rate": 3e-3, "max_train_examples": 40000,
              "max_validation_examples": 2000, "early_stopping_patience": 1,
              "embedding_dim": 96, "units": 96, "source_vocab_size": 6000,
              "target_vocab_size": 4000, "max_sentence_tokens": 16, "dropout": 0.1},
    # All 107k training pairs, wider GRUs, bigger vocabularies, six epochs: about 80 minutes
    # on 2 CPU cores sharing them with another run.
    "full": {"epochs": 6, "batch_size": 128, "learning_rate": 2e-3,
             "early_stopping_patience": 2, "embedding_dim": 128, "units": 128,
             "dropout": 0.2, "source_vocab_size": 12000, "target_vocab_size": 8000,
             "max_sentence_tokens": 20, "beam_width": 5},
}


def load_split(split: str, limit: int | None = None) -> tf.data.Dataset:
    """Raw {"es", "en"} string pairs of one spa_eng split, prepared into the TFDS cache once.

    Args:
        split: train, validation or test.
        limit: keep the first `limit` pairs (TFDS stores them in a fixed shuffled order).
    """
    from pipelines import spa_eng

    data = spa_eng.prepare().as_dataset(split=split, shuffle_files=False)
    return data.take(limit) if limit else data


def standardized_pairs(split: str, limit: int | None = None) -> tf.data.Dataset:
    """(spanish, "[START] english [END]") standardised string pairs of one split.

    Args:
        split: train, validation or test.
        limit: keep the first `limit` pairs.
    """
    import tensorflow as tf

    from models.translation_text import add_start_end, standardize

    def prepare(batch):
        return standardize(batch["es"]), add_start_end(standardize(batch["en"]))

    return (load_split(split, limit).batch(1024).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
            .unbatch())


def test_pairs(limit: int | None = None) -> list[tuple[str, str]]:
    """The test split's raw (spanish, english) pairs, in stored order.

    Args:
        limit: keep the first `limit` pairs.
    """
    return [(ex["es"].decode(), ex["en"].decode())
            for ex in load_split("test", limit).as_numpy_iterator()]


def group_references(pairs: list[tuple[str, str]]
                     ) -> tuple[list[str], list[list[str]], list[int]]:
    """Unique Spanish sources (first-seen order), every English translation of each, and the
    source index of each pair.

    Sources are compared the way the splits are made (spa_eng.split_key), so a sentence
    listed with several translations is translated once and scored against all of them.

    Args:
        pairs: (spanish, english) pairs.
    """
    from pipelines.spa_eng import split_key

    order: dict[str, int] = {}
    sources: list[str] = []
    references: list[list[str]] = []
    pair_source: list[int] = []
    for spanish, english in pairs:
        key = split_key(spanish)
        if key not in order:
            order[key] = len(sources)
            sources.append(spanish)
            references.append([])
        references[order[key]].append(english)
        pair_source.append(order[key])
    return sources, references, pair_source


def corpus_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, Any]:
    """Case-insensitive corpus BLEU and chrF (sacreBLEU) with any number of references each.

    Args:
        hypotheses: one translation per source.
        references: the reference translations of each source.
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


def plot_attention(items: list[dict[str, Any]], path: Path) -> None:
    """Draw one attention heat map per translated sentence into a PNG.

    Args:
        items: dicts with translation (str), source_tokens, output_tokens (lists of str) and
            attention ([output, source] array), as Translator.translate_with_attention returns
            them for one sentence.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(items), figsize=(4.5 * len(items), 4.5), squeeze=False)
    for ax, item in zip(axes[0], items, strict=True):
        ax.imshow(item["attention"], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(item["source_tokens"])), item["source_tokens"], rotation=90)
        ax.set_yticks(range(len(item["output_tokens"])), item["output_tokens"])
        ax.set_xlabel("Spanish")
        ax.set_ylabel("English")
        ax.set_title(item["translation"], fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(path)


class TranslationTask(Task):
    """Spanish -> English on the Anki/Tatoeba pairs with an attentional encoder-decoder."""

    name = "translation"
    dataset = "spa_eng"
    export_name = "translator"
    config_class = TranslationConfig
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES

    def __init__(self) -> None:
        # Registers Translator with Keras, so checkpoints load before the model is ever built.
        import models.translation  # noqa: F401

        self._vectorizers: dict[tuple, tuple[Any, Any]] = {}

    def vectorizers(self, config: TranslationConfig) -> tuple[Any, Any]:
        """Source and target TextVectorization adapted on the training pairs in use (memoised).

        Args:
            config: max_train_examples and the vocabulary sizes.
        """
        from models.translation_text import make_vectorizer

        key = (config.max_train_examples, config.source_vocab_size, config.target_vocab_size)
        if key not in self._vectorizers:
            started = time.monotonic()
            pairs = standardized_pairs("train", config.max_train_examples).cache()
            source = make_vectorizer(pairs.map(lambda es, en: es).batch(1024),
                                     config.source_vocab_size)
            target = make_vectorizer(pairs.map(lambda es, en: en).batch(1024),
                                     config.target_vocab_size)
            log.info("vocabularies: %d Spanish, %d English tokens (%.1f s)",
                     source.vocabulary_size(), target.vocabulary_size(),
                     time.monotonic() - started)
            self._vectorizers[key] = (source, target)
        return self._vectorizers[key]

    def _id_pairs(self, split: str, config: TranslationConfig, limit: int | None
                  ) -> tf.data.Dataset:
        """((source_ids, target_in_ids), target_out_ids) per pair, unbatched."""
        source_vectorizer, target_vectorizer = self.vectorizers(config)

        def to_ids(es, en):
            source, target = source_vectorizer(es), target_vectorizer(en)
            return (source.to_tensor(), source.row_lengths(), target.to_tensor(),
                    target.row_lengths())

        def split_target(source, source_len, target, target_len):
            return (source[:source_len], target[:target_len - 1]), target[1:target_len]

        # Vectorizing whole batches is fast; unbatched rows are cut back to their own length.
        return (standardized_pairs(split, limit).batch(1024).map(to_ids).unbatch()
                .map(split_target))

    def datasets(self, config: TranslationConfig) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        """Training pairs bucketed by length, and the validation split's pairs."""
        import tensorflow as tf

        longest = config.max_sentence_tokens
        train = self._id_pairs("train", config, config.max_train_examples).filter(
            lambda x, y: (tf.size(x[0]) <= longest) & (tf.size(y) <= longest + 1)).cache()
        # Batches of similar lengths waste little time on padding.
        bounds = [b for b in (6, 8, 10, 12, 16, 20, 24, 32) if b < longest + 2]
        train = train.shuffle(20000, seed=config.seed, reshuffle_each_iteration=True)
        train = train.bucket_by_sequence_length(
            lambda x, y: tf.maximum(tf.size(x[0]), tf.size(y)), bounds,
            [config.batch_size] * (len(bounds) + 1)).prefetch(tf.data.AUTOTUNE)
        validation = self._id_pairs("validation", config, config.max_validation_examples)
        validation = validation.padded_batch(config.batch_size).cache().prefetch(
            tf.data.AUTOTUNE)
        return train, validation

    def build_model(self, config: TranslationConfig) -> keras.Model:
        from models.translation import Translator

        source, target = self.vectorizers(config)
        model = Translator(source.get_vocabulary(), target.get_vocabulary(),
                           embedding_dim=config.embedding_dim, units=config.units,
                           cell=config.cell, attention=config.attention, dropout=config.dropout)
        model.build()
        return model

    def loss(self, config: TranslationConfig) -> Any:
        import keras

        # ignore_class masks the padding after each sentence's [END].
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)

    def metrics(self, config: TranslationConfig) -> list[Any]:
        from models.translation import MaskedTokenAccuracy

        return [MaskedTokenAccuracy()]

    def translator(self, model: keras.Model, config: TranslationConfig, beam_width: int
                   ) -> Any:
        """A graph-compiled function translating a batch of raw Spanish strings.

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

    def translate_all(self, model: keras.Model, config: TranslationConfig,
                      sentences: list[str], beam_width: int) -> list[str]:
        """Translate raw Spanish sentences in batches of config.eval_batch_size.

        Args:
            model: a Translator.
            config: search settings and batch size.
            sentences: raw Spanish sentences.
            beam_width: 1 for greedy search.
        """
        translate = self.translator(model, config, beam_width)
        out: list[str] = []
        for i in range(0, len(sentences), config.eval_batch_size):
            batch = sentences[i:i + config.eval_batch_size]
            out.extend(t.decode() for t in translate(batch).numpy())
        return out

    def evaluate(self, model: keras.Model, config: TranslationConfig, run_dir: Path
                 ) -> dict[str, Any]:
        pairs = test_pairs(config.max_eval_examples)
        sources, references, pair_source = group_references(pairs)
        result: dict[str, Any] = {"test_pairs": len(pairs), "test_sources": len(sources),
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
        # also the usual one-pair-one-reference BLEU, each pair against its own English only.
        result["bleu"], result["chrf"] = scores["bleu"], scores["chrf"]
        result["bleu_single_reference"] = corpus_scores(
            [translations[i] for i in pair_source], [[en] for _, en in pairs])["bleu"]
        result["samples"] = [{"spanish": s, "references": r, "translation": t}
                             for s, r, t in list(zip(sources, references, translations,
                                                     strict=True))[:config.samples]]
        result["attention_plot"] = str(self.write_attention_plot(model, config, sources,
                                                                 run_dir))
        return result

    def write_attention_plot(self, model: keras.Model, config: TranslationConfig,
                             sources: list[str], run_dir: Path) -> Path:
        """Draw the attention of a few short test sentences into run_dir/attention.png.

        Args:
            model: a Translator.
            config: search settings and how many sentences.
            sources: test sentences to pick from (the shortest are easiest to read).
            run_dir: where the PNG goes.
        """
        import tensorflow as tf

        picked = [s for s in sources if 4 <= len(s.split()) <= 8][:config.heatmaps]
        items = []
        for sentence in [*HEATMAP_SENTENCES, *picked]:
            out = model.translate_with_attention(tf.constant([sentence]), config.beam_width,
                                                 config.max_output_length,
                                                 config.length_penalty)
            items.append({"translation": out["translation"][0].numpy().decode(),
                          "source_tokens": [t.decode() for t in out["source_tokens"][0].numpy()],
                          "output_tokens": [t.decode() for t in out["output_tokens"][0].numpy()],
                          "attention": out["attention"][0].numpy()})
        path = Path(run_dir) / ATTENTION_PLOT
        plot_attention(items, path)
        return path

    def serving_signatures(self, model: keras.Model, config: TranslationConfig,
                           run_dir: Path | None = None) -> dict[str, Any]:
        import tensorflow as tf

        search = (config.beam_width, config.max_output_length, config.length_penalty)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serving_default(text):
            return {"translation": model.translate(text, *search)}

        # Shape [None], not [1], so clients send a batch of one like any other request.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def translate_with_attention(text):
            return model.translate_with_attention(text, *search)

        return {"serving_default": serving_default,
                "translate_with_attention": translate_with_attention}

    def warmup_requests(self) -> list[Any]:
        from serving.export import predict_log

        return [predict_log({"text": list(HEATMAP_SENTENCES)}, "serving_default",
                            self.export_name),
                predict_log({"text": list(HEATMAP_SENTENCES)}, "translate_with_attention",
                            self.export_name)]
