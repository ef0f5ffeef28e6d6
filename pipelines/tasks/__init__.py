"""The registry of tasks: one `TaskInfo` line per task or preset, and `get_task`.

The one trainer (`pipelines.training.trainer`) and the `rnnkit train|evaluate|export` commands work
on any `Task` (the contract: `pipelines.training.task`); adding a task (or a preset of one) means
writing one subclass in this folder and one `TaskInfo` line in `REGISTRY`. That line is the one
source of truth for the task's name, kind, served model name, headline metrics, published anchors
and place in `rnnkit run` (`make run`): the CLI, the web app, the export metadata and
self-training all read it from here, without importing the task's module.
"""

from __future__ import annotations

import importlib

from pipelines.training.task import Anchor, Registry, Task, TaskInfo
from serving.errors import UserError

# The registry: one line per task or preset. `rnnkit run` runs those with a run_order, cheapest
# first, so the first served model is up soonest.
REGISTRY: tuple[TaskInfo, ...] = (
    TaskInfo("sentiment", "pipelines.tasks.sentiment:SentimentTask", "classify", "sentiment",
             ("accuracy", "f1", "roc_auc"), preset_of="classify", dataset="imdb", run_order=10,
             anchors=(
                 Anchor("accuracy", 0.843, "keras.io bidirectional LSTM example"),
                 Anchor("accuracy", 0.86, "TensorFlow RNN text-classification tutorial"))),
    TaskInfo("sentiment_bow", "pipelines.tasks.sentiment:SentimentBowTask", "classify",
             "sentiment_bow", ("accuracy", "f1", "roc_auc"), preset_of="classify",
             dataset="imdb", run_order=20),
    TaskInfo("classify", "pipelines.tasks.classify:ClassifyTask", "classify", "classifier",
             ("accuracy", "macro_f1")),
    TaskInfo("tag", "pipelines.tasks.tagging:TagTask", "tag", "tagger", ("accuracy", "macro_f1")),
    TaskInfo("seq2seq", "pipelines.tasks.seq2seq:Seq2SeqTask", "seq2seq", "seq2seq",
             ("bleu", "chrf")),
    TaskInfo("translation", "pipelines.tasks.translation:TranslationTask", "seq2seq", "translator",
             ("bleu", "chrf"), preset_of="seq2seq", dataset="spa_eng", run_order=30, anchors=(
                 Anchor("bleu", 5.0, "GRU seq2seq lab without attention "
                                     "(sentence BLEU-4 0.05)"),)),
    TaskInfo("language_model", "pipelines.tasks.language_model:LanguageModelTask", "language_model",
             "language_model", ("perplexity", "validation_perplexity", "top1_accuracy")),
    TaskInfo("caption", "pipelines.tasks.captioning:CaptionTask", "caption", "captioner",
             ("bleu_1", "bleu_4", "cider_d")),
    TaskInfo("captioning", "pipelines.tasks.captioning:CaptioningTask", "caption", "captioner",
             ("bleu_1", "bleu_4", "cider_d"), preset_of="caption", dataset="flickr8k",
             run_order=40, anchors=(
                 Anchor("bleu_1", 0.670, "Xu et al. 2015, soft attention"),
                 Anchor("bleu_4", 0.195, "Xu et al. 2015, soft attention"),
                 Anchor("bleu_4", 0.213, "Xu et al. 2015, hard attention"))),
)

TASKS: dict[str, TaskInfo] = {info.name: info for info in REGISTRY}


def task_names() -> list[str]:
    """Every registered task name."""
    return sorted(TASKS)


def task_info(name: str) -> TaskInfo:
    """A registered task's registry line.

    Args:
        name: the task name.
    """
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}", f"choose one of {task_names()}")
    return TASKS[name]


def run_order() -> list[str]:
    """The tasks `rnnkit run` runs, in order."""
    chosen = [info for info in REGISTRY if info.run_order is not None]
    return [info.name for info in sorted(chosen, key=lambda info: info.run_order)]


def served_model_names() -> list[str]:
    """The default served model name of every task, each once, in registry order."""
    return list(dict.fromkeys(info.export_name for info in REGISTRY))


def get_task(name: str) -> Task:
    """Instantiate a registered task by name, with its registry facts set on the instance.

    Args:
        name: the task name.
    """
    info = task_info(name)
    module_name, _, class_name = info.target.partition(":")
    task = getattr(importlib.import_module(module_name), class_name)()
    task.name, task.export_name, task.info = info.name, info.export_name, info
    task.registry = Registry(REGISTRY, get_task)
    return task
