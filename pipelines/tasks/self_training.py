"""Self-training: IMDB's 50k unlabelled reviews, labelled by trained teacher runs.

The labelled validation reviews share movies with the training reviews (up to 30 reviews a
movie); the test reviews and the unlabelled ones come from other movies. A student that also
learns from the unlabelled reviews, labelled with the teachers' mean probability (or, with
`soft_labels` off, 0 or 1 where they are confident), sees far more movies than the labelled
split holds. The teachers never see the test split, and they must hold out the same validation
reviews as the student, so that the student's validation stays unseen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.datasets import imdb
from pipelines.training.run_dir import load_config, run_task
from serving.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

    from pipelines.tasks.sentiment import ReviewConfig

log = logging.getLogger("pipelines.tasks.self_training")



def teacher_tasks() -> list[str]:
    """The tasks whose runs can teach: the registry's IMDB classifiers."""
    from pipelines.tasks import REGISTRY

    return [info.name for info in REGISTRY if info.kind == "classify" and info.dataset == "imdb"]


def teacher_runs(config: ReviewConfig) -> list[Path]:
    """The run directories named by `config.teachers`, each checked to be a usable teacher.

    Args:
        config: the student's config; `teachers` is a comma-separated list of run directories.
    """
    runs = [Path(part.strip()).expanduser() for part in config.teachers.split(",")
            if part.strip()]
    for run in runs:
        task_name = run_task(run) if run.is_dir() else None
        if task_name not in teacher_tasks():
            raise UserError(f"teacher {run} is not a trained IMDB run",
                            "pass --set teachers= with the --run-dir of finished `rnnkit train "
                            f"{' or '.join(teacher_tasks())}` runs, separated by commas")
        from pipelines.tasks import get_task

        teacher = load_config(run, get_task(task_name).config_class)
        if (teacher.seed, teacher.validation_fraction) != (config.seed,
                                                            config.validation_fraction):
            raise UserError(
                f"teacher {run} held out other validation reviews (seed {teacher.seed}, "
                f"validation_fraction {teacher.validation_fraction}) than this run (seed "
                f"{config.seed}, validation_fraction {config.validation_fraction})",
                "use teachers trained with this run's seed and validation_fraction, so that "
                "no teacher has learned from the reviews this run validates on")
    return runs


def teacher_probabilities(runs: list[Path], max_examples: int | None = None) -> np.ndarray:
    """The teachers' mean probability that each unlabelled review is positive, in split order.

    Args:
        runs: teacher run directories (see `teacher_runs`).
        max_examples: only the first this many unlabelled reviews; None for all 50k.
    """
    import numpy as np

    from pipelines.tasks import get_task
    from pipelines.training.checkpoints import CheckpointStore

    total = None
    for run in runs:
        task = get_task(run_task(run))
        config = load_config(run, task.config_class)
        model = CheckpointStore(run).load_model("best")
        # predict batches reviews of similar length together; the index puts them back in order.
        index, answers = task.predict(model, config, _numbered(max_examples))
        probabilities = np.empty_like(answers)
        probabilities[index.astype(np.int64)] = answers
        log.info("teacher %s: %.1f%% of %d unlabelled reviews positive", run,
                 100 * float((probabilities >= 0.5).mean()), len(probabilities))
        total = probabilities if total is None else total + probabilities
    return np.asarray(total) / len(runs)


def _numbered(max_examples: int | None) -> tf.data.Dataset:
    """The unlabelled reviews as unbatched (text, [its index in the split]) pairs."""
    import tensorflow as tf

    return imdb.unlabelled_texts(max_examples).unbatch().enumerate().map(
        lambda index, text: (text, tf.cast(index, tf.float32)[None]))


def pseudo_labelled(config: ReviewConfig) -> tf.data.Dataset | None:
    """The unlabelled reviews with the teachers' labels, as unbatched (text, label).

    A review is kept when the teachers' mean probability is at least
    `pseudo_label_confidence` (labelled positive) or at most 1 - it (negative); with
    `soft_labels` its label is that probability. None when `config.teachers` names no run.

    Args:
        config: the student's config (teachers, pseudo_label_confidence, soft_labels,
            max_train_examples).
    """
    import numpy as np
    import tensorflow as tf

    runs = teacher_runs(config)
    if not runs:
        return None
    confidence = config.pseudo_label_confidence
    # The unlabelled split only; subsets for tests take as many as the labelled training part.
    probabilities = teacher_probabilities(runs, config.max_train_examples)
    keep = (probabilities >= confidence) | (probabilities <= 1 - confidence)
    labels = probabilities[keep] if config.soft_labels else probabilities[keep] >= 0.5
    labels = labels.astype(np.float32)[:, None]
    log.info("self-training on %d of %d unlabelled reviews (teachers' confidence >= %.2f, %s "
             "labels), %.1f%% of them positive", keep.sum(), len(probabilities), confidence,
             "soft" if config.soft_labels else "hard",
             100 * float((labels >= 0.5).mean()) if keep.any() else 0.0)
    if not keep.any():
        log.warning("no unlabelled review reaches pseudo_label_confidence=%.2f; training on the "
                    "labelled reviews only (lower it, e.g. --set pseudo_label_confidence=0.8)",
                    confidence)
    texts = imdb.unlabelled_texts(config.max_train_examples).unbatch()
    chosen = tf.data.Dataset.zip(texts, tf.data.Dataset.from_tensor_slices(keep)).filter(
        lambda _, wanted: wanted).map(lambda text, _: text)
    return tf.data.Dataset.zip(chosen, tf.data.Dataset.from_tensor_slices(labels))
