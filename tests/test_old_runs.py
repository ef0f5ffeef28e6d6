"""Run directories trained by an earlier rnnkit (before pipelines/ was laid out by role and the
tasks became presets of the generic ones) still evaluate, with the same numbers the earlier
code gives, and still export signatures that answer.

The earlier code is taken from git (`OLD`), trains tiny runs of the presets in a child process
from that tree, and evaluates them there; this tree then evaluates and exports the same runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parent.parent
OLD = "87b4d60"  # the last commit before the structure change (issue 22)

RUNS = {
    "sentiment": ["max_train_examples=300", "max_eval_examples=200", "epochs=1",
                  "batch_size=50", "max_tokens=2000", "embedding_dim=16", "units=8",
                  "dense_units=8", "max_length=60"],
    "translation": ["max_train_examples=40", "max_eval_examples=8", "max_validation_examples=8",
                    "batch_size=20", "epochs=1", "embedding_dim=8", "units=8", "beam_width=2",
                    "samples=1", "heatmaps=1"],
}


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory) -> Path:
    """The packages of commit OLD, extracted from git."""
    folder = tmp_path_factory.mktemp("old_rnnkit")
    archive = folder / "old.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), OLD, "app", "models",
                    "pipelines", "serving"], cwd=REPO, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def old_rnnkit(tree: Path, *args: str) -> str:
    """Run the earlier `rnnkit` with its packages first on sys.path; its stdout."""
    code = "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(tree)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# The translation run costs ~110 s on shared cores: `make test-slow`.
@pytest.mark.parametrize("task_name", ["sentiment",
                                       pytest.param("translation", marks=pytest.mark.slow)])
def test_a_run_of_the_earlier_code_evaluates_the_same_and_exports(
        task_name, old_tree, shared_data, tfds_dir, reviews, tmp_path):
    from pipelines.tasks import get_task
    from pipelines.training.evaluation import evaluate_run
    from pipelines.training.export import export_run

    run_dir = tmp_path / task_name
    sets = [arg for pair in RUNS[task_name] for arg in ("--set", pair)]
    old_rnnkit(old_tree, "train", task_name, "--profile", "quick", "--run-dir", str(run_dir),
               *sets)
    before = json.loads(old_rnnkit(old_tree, "evaluate", task_name, "--run-dir", str(run_dir)))

    task = get_task(task_name)
    after = evaluate_run(task, run_dir)
    for key in ("accuracy", "bleu", "n_examples"):
        if key in before:
            assert after[key] == pytest.approx(before[key], abs=1e-6), key
    assert {"accuracy", "bleu"} & set(before)

    path = export_run(task, run_dir, tmp_path / "exports")
    loaded = tf.saved_model.load(str(path))
    text = tf.constant(["A wonderful, moving film." if task_name == "sentiment"
                        else "¿Dónde está la biblioteca?"])
    out = loaded.signatures["serving_default"](text=text)
    if task_name == "sentiment":
        assert 0 <= float(np.ravel(out["probability"].numpy())[0]) <= 1
    else:
        assert out["translation"].dtype == tf.string and out["output_text"].shape == (1,)
