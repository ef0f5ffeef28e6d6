"""The task registry is the one source of truth: a task added there alone runs everywhere."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from app.commands import run as run_command
from pipelines import tasks
from pipelines.config import TrainConfig
from pipelines.tasks import REGISTRY, get_task, run_order, task_info
from pipelines.training.task import KINDS, Task, TaskInfo
from serving.errors import UserError


class StandInTask(Task):
    """A STAND-IN task for registry plumbing (not a model task): is x0 > x1, by one Dense layer."""

    name: ClassVar[str] = "stand_in_class_name"  # the registry's name must win
    export_name: ClassVar[str] = "stand_in_class_export"
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"epochs": 2, "batch_size": 16, "learning_rate": 0.05}, "full": {}}

    def _data(self, n: int, seed: int) -> Any:
        import numpy as np
        import tensorflow as tf

        x = np.random.default_rng(seed).normal(size=(n, 2)).astype("float32")
        y = (x[:, :1] > x[:, 1:]).astype("float32")
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    def datasets(self, config: TrainConfig) -> Any:
        return self._data(256, config.seed), self._data(64, config.seed + 1)

    def build_model(self, config: TrainConfig) -> Any:
        import keras

        inputs = keras.Input(shape=(2,))
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))

    def loss(self, config: TrainConfig) -> Any:
        return "binary_crossentropy"

    def evaluate(self, model: Any, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
        hits = total = 0
        for x, y in self._data(200, config.seed + 2):
            hits += int(((model(x).numpy() >= 0.5) == (y.numpy() >= 0.5)).sum())
            total += len(y)
        return {"accuracy": hits / total, "examples": total}

    def serving_signatures(self, model: Any, config: TrainConfig,
                           run_dir: Path | None = None) -> dict[str, Any]:
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serving_default(x):
            return {"probability": tf.reshape(model(x), [-1])}

        return {"serving_default": serving_default}

    def export_metadata(self, config: TrainConfig, run_dir: Path | None) -> dict[str, Any]:
        return {"classes": ["x1 wins", "x0 wins"]}


STAND_IN = TaskInfo("stand_in", f"{__name__}:StandInTask", "classify", "stand_in_model",
                    ("accuracy",), dataset="stand_in_data", run_order=5)


@pytest.fixture()
def registered(monkeypatch) -> TaskInfo:
    """The stand-in added to the registry only (first in `rnnkit run`'s order)."""
    monkeypatch.setattr(tasks, "REGISTRY", (*REGISTRY, STAND_IN))
    monkeypatch.setattr(tasks, "TASKS", {**tasks.TASKS, STAND_IN.name: STAND_IN})
    return STAND_IN


def test_registry_lines_are_consistent() -> None:
    names = [info.name for info in REGISTRY]
    assert len(names) == len(set(names))
    for info in REGISTRY:
        assert info.kind in KINDS and info.headline, info
        assert info.preset_of is None or info.preset_of in names, info
        assert ":" in info.target, info
        if info.run_order is not None:
            assert info.dataset, f"{info.name} is in `rnnkit run` but needs the user's data"
    with pytest.raises(ValueError, match="kind"):
        TaskInfo("x", "m:C", "regression", "x", ("mse",))


def test_get_task_takes_its_facts_from_the_registry() -> None:
    task = get_task("translation")
    assert (task.name, task.export_name, task.info.kind) == ("translation", "translator",
                                                              "seq2seq")
    with pytest.raises(UserError, match="unknown task 'nope'"):
        task_info("nope")


def test_a_task_added_to_the_registry_alone_runs(registered, tmp_path, monkeypatch,
                                                 capsys) -> None:
    monkeypatch.setenv("RNNKIT_RUNS_DIR", str(tmp_path / "runs"))
    assert run_order()[0] == "stand_in"
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    assert parser.parse_args([]).tasks == run_order()
    args = parser.parse_args(["--tasks", "stand_in", "--no-serve", "--base-path",
                              str(tmp_path / "exports")])
    assert run_command.run(args) == 0

    out = capsys.readouterr().out
    summary = json.loads(out[:out.index("\nsummary")])
    (item,) = summary["tasks"]
    assert item["task"] == "stand_in" and item["model"] == "stand_in_model"
    assert item["test"]["accuracy"] > 0.8  # the headline key the registry names, learned
    assert "stand_in" in out[out.index("\nsummary"):]
    export = Path(item["export"])
    assert export.parent.name == "stand_in_model"
    metadata = json.loads((export / "assets.extra" / "rnnkit_export.json").read_text())
    assert metadata["kind"] == "classify" and metadata["task"] == "stand_in"
    assert metadata["classes"] == ["x1 wins", "x0 wins"]

    # A second run reuses the finished run and its export.
    assert run_command.run(args) == 0
    out = capsys.readouterr().out
    again = json.loads(out[:out.index("\nsummary")])["tasks"][0]
    assert not again["trained_now"] and again["export"] == item["export"]


def test_run_refuses_a_task_that_needs_the_users_data(monkeypatch) -> None:
    user_data = TaskInfo("on_your_data", f"{__name__}:StandInTask", "classify", "mine",
                         ("accuracy",))
    monkeypatch.setattr(tasks, "TASKS", {**tasks.TASKS, user_data.name: user_data})
    with pytest.raises(UserError, match="trains on the data you give it"):
        run_command.plan(["on_your_data"])


def test_export_model_name_and_default_name(registered, tmp_path, monkeypatch) -> None:
    from pipelines.training.export import export_run
    from pipelines.training.trainer import train

    monkeypatch.setenv("RNNKIT_RUNS_DIR", str(tmp_path / "runs"))
    task = get_task("stand_in")
    result = train(task, task.config("quick", ["epochs=1"]))
    assert export_run(task, result.run_dir, tmp_path, "mine").parent.name == "mine"
    assert export_run(task, result.run_dir, tmp_path).parent.name == "stand_in_model"
    with pytest.raises(UserError, match="not usable as a served model's name"):
        export_run(task, result.run_dir, tmp_path, "../up")


def test_default_export_name_is_the_data_files_stem() -> None:
    task = get_task("translation")

    class WithData:
        data = "/some/where/My Pairs.v2.csv.gz"

    assert task.default_export_name(WithData()) == "My_Pairs"
    WithData.data = "spa_eng"  # a named data set: the preset's name
    assert task.default_export_name(WithData()) == "translator"


class _Reply(dict):
    """A Predict answer as serving.client returns it: outputs by name, plus the version."""

    version = 3


class _StandInServer:
    """A serving client answering like a model server that serves only the stand-in's model."""

    SIGNATURES: ClassVar[dict[str, Any]] = {"serving_default": {
        "inputs": {"text": {"dtype": "DT_STRING"}},
        "outputs": {"label": {"dtype": "DT_STRING"}, "probability": {"dtype": "DT_FLOAT"},
                    "probabilities": {"dtype": "DT_FLOAT"}}}}

    def _check(self, model: str) -> None:
        from serving.client import ServerReplyError
        from serving.status import Code

        if model != "stand_in_model":
            raise ServerReplyError(Code.NOT_FOUND, f"Servable not found: {model}")

    def status(self, model: str) -> dict[str, Any]:
        self._check(model)
        return {"model_version_status": [{"version": "3", "state": "AVAILABLE",
                                          "status": {"error_code": "OK"}}]}

    def metadata(self, model: str) -> dict[str, Any]:
        self._check(model)
        return {"metadata": {"signature_def": {"signature_def": self.SIGNATURES}}}

    def predict(self, model: str, inputs: dict[str, Any], signature_name: str | None = None):
        import numpy as np

        self._check(model)
        assert inputs == {"text": ["is x0 bigger?"]} and signature_name is None
        return _Reply(label=np.array([b"x0 wins"]), probability=np.array([0.75]),
                      probabilities=np.array([[0.25, 0.75]]))


def test_the_web_api_finds_and_answers_a_registry_only_task(registered, tmp_path) -> None:
    from app.web.api import WebApi

    api = WebApi(_StandInServer, "fake:8500", tmp_path)
    models = {m["name"]: m for m in api.models()["models"]}
    assert set(models) >= {"stand_in_model", "sentiment", "translator"}
    assert models["stand_in_model"]["kind"] == "classify"
    assert models["stand_in_model"]["state"] == "AVAILABLE"
    assert models["stand_in_model"]["versions"][0]["version"] == "3"
    assert models["sentiment"]["state"] == "NOT_LOADED"
    answer = api.predict({"model": "stand_in_model", "text": "is x0 bigger?"})
    assert (answer["kind"], answer["label"], answer["probability"], answer["version"]) == (
        "classify", "x0 wins", 0.75, "3")
    assert answer["classes"] == [{"name": "class 1", "probability": 0.75},
                                 {"name": "class 0", "probability": 0.25}]
