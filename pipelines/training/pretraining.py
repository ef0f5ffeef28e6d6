"""`--set encoder_from=RUN_DIR`: a classifier that starts from a finished language-model run.

The recipe of Dai & Le (2015) and Howard & Ruder (2018): train `language_model` on the task's
own text (for IMDB its 25k training and 50k unlabelled reviews), then train the classifier with
its word vectors and recurrent layers started from the language model's (models.transfer).
Two options shape the fine-tuning, both carried out by the optimizer (training.distribute):
`encoder_learning_rate` scales the pretrained layers' learning rate (discriminative fine-tuning),
and `gradual_unfreezing` keeps them frozen at first, the top one training from the second epoch
and each one below an epoch later, the word vectors last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.errors import UserError

if TYPE_CHECKING:
    import keras

log = logging.getLogger("pipelines.training.pretraining")

LANGUAGE_MODEL_TASK = "language_model"
# Below this share of the classifier's words known to the language model, the two were made
# from different text (or tokenised differently) and little would transfer.
MIN_SHARED_WORDS = 0.5
# The classifier's settings that must equal the language model's for its layers to fit.
ENCODER_SHAPE = ("cell", "embedding_dim", "units")


def check_options(config: Any) -> None:
    """UserError for pretraining options out of range (the run directory is checked later).

    Args:
        config: a classifier's config with encoder_from, encoder_learning_rate and
            gradual_unfreezing.
    """
    if not config.encoder_learning_rate > 0:
        raise UserError(f"encoder_learning_rate={config.encoder_learning_rate} must be above 0",
                        "pass a share of learning_rate, e.g. --set encoder_learning_rate=0.3 "
                        "(1.0 for the same rate; gradual_unfreezing=true freezes layers)")
    if config.gradual_unfreezing and not config.encoder_from:
        raise UserError("gradual_unfreezing=true needs pretrained layers to unfreeze",
                        "add --set encoder_from=RUN_DIR of a language_model run")


def with_encoder_shape(config: Any, overrides: list[str] | None) -> Any:
    """`config` with the language model's cell and sizes wherever the command line left them.

    With `encoder_from`, the classifier's `cell`, `embedding_dim` and `units` must be the
    language model's for its layers to fit: they are taken from the language model's run
    unless given with --set (a size given that does not fit is refused later, naming the
    difference). A preset that starts its embedding otherwise (`word_vectors`) starts it from
    the language model instead, unless that too was given.

    Args:
        config: a classifier's config built from a profile and `overrides`.
        overrides: the command line's `key=value` settings.
    """
    if not config.encoder_from:
        return config
    from pipelines.config import override_key
    from pipelines.training.run_dir import read_json

    given = {override_key(item) for item in overrides or []}
    settings = read_json(_language_model_dir(config.encoder_from) / "config.json")
    changes = {name: settings[name] for name in ENCODER_SHAPE
               if name not in given and name in settings
               and getattr(config, name) != settings[name]}
    if getattr(config, "word_vectors", "random") != "random" and "word_vectors" not in given:
        changes["word_vectors"] = "random"
    if changes:
        log.info("encoder_from: the classifier takes the language model's %s",
                 ", ".join(f"{name}={value}" for name, value in changes.items()))
    return config.replace(**changes)


def _language_model_dir(run_dir: str) -> Path:
    """The path of a finished `language_model` run; UserError naming the fix otherwise.

    Args:
        run_dir: the run directory given as `encoder_from`.
    """
    from pipelines.training.run_dir import run_task

    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"encoder_from={run_dir}: no such run directory",
                        "pass the --run-dir of a finished `rnnkit train language_model` run")
    task = run_task(path)
    if task != LANGUAGE_MODEL_TASK:
        found = f"a {task} run" if task else "not a trained run (no checkpoint)"
        # A folder of another run cannot take the language model: suggest a new one.
        suggested = run_dir if not task and not any(path.iterdir()) else \
            "runs/language_model/mine"
        raise UserError(f"encoder_from={run_dir} is {found}, not a language model",
                        "pass a language model's run, or train one first: rnnkit train "
                        f"language_model --data YOUR_TEXT --run-dir {suggested}")
    return path


def load_language_model(run_dir: str) -> keras.Model:
    """The best checkpoint of a finished `language_model` run.

    Args:
        run_dir: the run directory given as `encoder_from`.
    """
    import models.language_model  # noqa: F401 - registers the language model's layers
    from pipelines.training.checkpoints import CheckpointStore

    return CheckpointStore(_language_model_dir(run_dir)).load_model("best")


def start_from_language_model(model: keras.Model,
                              vectorizer: keras.layers.TextVectorization,
                              config: Any) -> list[str]:
    """Copy `config.encoder_from`'s word vectors and recurrent layers into the classifier.

    Returns the names of the layers that now hold pretrained weights.

    Args:
        model: the freshly built classifier (models.sentiment.many_to_one).
        vectorizer: its adapted vectorizer (id 0 padding, 1 the unknown token, then words).
        config: the classifier's config.
    """
    from models.transfer import copy_encoder, encoder_differences, shared_rows

    language_model = load_language_model(config.encoder_from)
    differences = encoder_differences(language_model, model)
    if differences:
        raise UserError(f"encoder_from={config.encoder_from} does not fit this classifier: "
                        + "; ".join(differences),
                        "give the classifier the language model's shape (--cell, --set "
                        "embedding_dim=, units=, layers=), or train a language model of "
                        "this shape")
    rows = shared_rows(language_model, vectorizer)
    word_count = vectorizer.vocabulary_size() - 2  # padding and the unknown token aside
    shared = (len(rows) - 1) / max(word_count, 1)
    if shared < MIN_SHARED_WORDS:
        raise UserError(
            f"encoder_from={config.encoder_from} has another vocabulary: it knows "
            f"{shared:.0%} of this classifier's {word_count} words",
            "train the language model on this data's text (and tokenize=lower_punct), so "
            "the two share their words")
    copied = copy_encoder(language_model, model, rows)
    log.info("started %s from the language model in %s (%.0f%% of %d words known)",
             ", ".join(copied), config.encoder_from, 100 * shared, word_count)
    return copied


def layer_rates(model: keras.Model, config: Any) -> dict[str, tuple[float, int]]:
    """Each pretrained variable's learning-rate scale and the epoch (0-based) it trains from.

    Empty without `encoder_from`, and when every pretrained layer would train at the full rate
    from the start (then plain Adam does the same). The pretrained layers are the embedding
    and the recurrent layers models.transfer copies into; with gradual_unfreezing the top one
    trains from epoch 1, each one below an epoch later.

    Args:
        model: the classifier (built, or loaded from a checkpoint to resume).
        config: its config.
    """
    from models.transfer import CLASSIFIER_EMBEDDING, classifier_recurrent

    if not config.encoder_from or (config.encoder_learning_rate == 1.0
                                   and not config.gradual_unfreezing):
        return {}
    groups = [model.get_layer(CLASSIFIER_EMBEDDING), *classifier_recurrent(model)]
    rates = {}
    for depth, layer in enumerate(reversed(groups)):
        start = depth + 1 if config.gradual_unfreezing else 0
        for weight in layer.trainable_weights:
            rates[weight.path] = (config.encoder_learning_rate, start)
    return rates


class StartsFromLanguageModel:
    """What `encoder_from` adds to a classifier's Task (list it before Task among the bases).

    Its config takes the language model's sizes where the command line left them
    (`with_encoder_shape`); its pretrained layers get their learning rates (`layer_rates`).
    """

    def config(self, profile: str = "quick", overrides: list[str] | None = None) -> Any:
        return with_encoder_shape(super().config(profile, overrides), overrides)  # type: ignore[misc]

    def layer_rates(self, model: keras.Model, config: Any) -> dict[str, tuple[float, int]]:
        return layer_rates(model, config)
