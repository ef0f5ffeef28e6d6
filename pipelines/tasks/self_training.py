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
from pipelines.training.checkpoints import CheckpointStore
from pipelines.training.run_dir import load_config, run_task
from serving.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

    from pipelines.config import TrainConfig
    from pipelines.training.task import Registry, Task

log = logging.getLogger("pipelines.tasks.self_training")


def teacher_tasks(registry: Registry) -> list[str]:
    """The tasks whose runs can teach: the registry's IMDB classifiers.

    Args:
        registry: the student task's view of the registry (`Task.registry`).
    """
    return [info.name for info in registry.lines
            if info.kind == "classify" and info.dataset == "imdb"]


def teacher_runs(config: TrainConfig, registry: Registry | None) -> list[tuple[Path, Task]]:
    """The runs named by `config.teachers` with their tasks, each checked to be a usable teacher.

    Args:
        config: the student's config (a ReviewConfig); `teachers` is a comma-separated list of
            run directories.
        registry: the student task's view of the registry (`Task.registry`, set by get_task).
    """
    runs = [Path(part.strip()).expanduser() for part in config.teachers.split(",")
            if part.strip()]
    if runs and registry is None:
        raise ValueError("self-training needs a task made by get_task (it has no registry)")
    teachers = []
    for run in runs:
        names = teacher_tasks(registry)
        task_name = run_task(run) if run.is_dir() else None
        if task_name not in names:
            raise UserError(f"teacher {run} is not a trained IMDB run",
                            "pass --set teachers= with the --run-dir of finished `rnnkit train "
                            f"{' or '.join(names)}` runs, separated by commas")
        task = registry.get_task(task_name)
        teacher = load_config(run, task.config_class)
        if (teacher.seed, teacher.validation_fraction) != (config.seed,
                                                            config.validation_fraction):
            raise UserError(
                f"teacher {run} held out other validation reviews (seed {teacher.seed}, "
                f"validation_fraction {teacher.validation_fraction}) than this run (seed "
                f"{config.seed}, validation_fraction {config.validation_fraction})",
                "use teachers trained with this run's seed and validation_fraction, so that "
                "no teacher has learned from the reviews this run validates on")
        teachers.append((run, task))
    return teachers


def teacher_probabilities(teachers: list[tuple[Path, Task]], max_examples: int | None = None,
                          ) -> np.ndarray:
    """The teachers' mean probability that each unlabelled review is positive, in split order.

    Args:
        teachers: teacher run directories with their tasks (see `teacher_runs`); each task's
            `predict` (the task contract) answers for its run's best model.
        max_examples: only the first this many unlabelled reviews; None for all 50k.
    """
    import numpy as np

    total = None
    for run, task in teachers:
        config = load_config(run, task.config_class)
        model = CheckpointStore(run).load_model("best")
        # predict batches reviews of similar length together; the index puts them back in order.
        index, answers = task.predict(model, config, _numbered(max_examples))
        probabilities = np.empty_like(answers)
        probabilities[index.astype(np.int64)] = answers
        log.info("teacher %s: %.1f%% of %d unlabelled reviews positive", run,
                 100 * float((probabilities >= 0.5).mean()), len(probabilities))
        total = probabilities if total is None else total + probabilities
    return np.asarray(total) / len(teachers)


def _numbered(max_examples: int | None) -> tf.data.Dataset:
    """The unlabelled reviews as unbatched (text, [its index in the split]) pairs."""
    import tensorflow as tf

    return imdb.unlabelled_texts(max_examples).unbatch().enumerate().map(
        lambda index, text: (text, tf.cast(index, tf.float32)[None]))


def pseudo_labelled(config: TrainConfig, registry: Registry | None,
                    ) -> tf.data.Dataset | None:
    """The unlabelled reviews with the teachers' labels, as unbatched (text, label).

    A review is kept when the teachers' mean probability is at least
    `pseudo_label_confidence` (labelled positive) or at most 1 - it (negative); with
    `soft_labels` its label is that probability. None when `config.teachers` names no run.

    Args:
        config: the student's config, a ReviewConfig (teachers, pseudo_label_confidence,
            soft_labels, max_train_examples).
        registry: the student task's view of the registry (`Task.registry`), where the
            teachers' tasks are found.
    """
    import numpy as np
    import tensorflow as tf

    teachers = teacher_runs(config, registry)
    if not teachers:
        return None
    confidence = config.pseudo_label_confidence
    # The unlabelled split only; subsets for tests take as many as the labelled training part.
    probabilities = teacher_probabilities(teachers, config.max_train_examples)
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
