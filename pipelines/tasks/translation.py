"""The `translation` preset of `seq2seq`: Spanish -> English on spa_eng (Anki/Tatoeba pairs).

Same model, data path, evaluation and export as `rnnkit train seq2seq --data spa_eng`; the preset
fixes the data set and keeps the profiles, the served name (`translator`), the Spanish example in
the attention plot and the run directories trained before `seq2seq` existed (their config.json
lacks the data fields, which default to spa_eng here).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.config import TrainConfig
from pipelines.tasks.seq2seq import Seq2SeqConfig, Seq2SeqTask

if TYPE_CHECKING:
    import tensorflow as tf

# Spanish sentences whose attention is drawn in the run dir (besides a few from the test split).
HEATMAP_SENTENCES = ("¿Dónde está la biblioteca?",)


@dataclasses.dataclass
class TranslationConfig(Seq2SeqConfig):
    """seq2seq's settings, on spa_eng (whose own validation split is used).

    Args:
        data: the named data set (spa_eng), or another file of Spanish-English pairs.
    """

    data: str = "spa_eng"


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
    from pipelines.datasets import spa_eng

    data = spa_eng.prepare().as_dataset(split=split, shuffle_files=False)
    return data.take(limit) if limit else data


def test_pairs(limit: int | None = None) -> list[tuple[str, str]]:
    """The test split's raw (spanish, english) pairs, in stored order.

    Args:
        limit: keep the first `limit` pairs.
    """
    return [(ex["es"].decode(), ex["en"].decode())
            for ex in load_split("test", limit).as_numpy_iterator()]


class TranslationTask(Seq2SeqTask):
    """Spanish -> English on the Anki/Tatoeba pairs with an attentional encoder-decoder."""

    name: ClassVar[str] = "translation"
    dataset: ClassVar[str] = "spa_eng"
    export_name: ClassVar[str] = "translator"
    config_class: ClassVar[type[TrainConfig]] = TranslationConfig
    profiles: ClassVar[dict[str, dict[str, Any]]] = PROFILES
    example_sentences: ClassVar[tuple[str, ...]] = HEATMAP_SENTENCES
    source_name: ClassVar[str] = "Spanish"
    target_name: ClassVar[str] = "English"
