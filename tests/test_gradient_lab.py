"""The gradient lab: its problems are what they claim, and `rnnkit lab gradients --quick` writes
lab.json, the plots and the report with numbers that hang together."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from app.cli import main
from pipelines.gradient_lab.lab import (
    GRADIENT_PLOT,
    LAB_FILE,
    NORM_PLOT,
    REPORT_FILE,
    SUCCESS_PLOT,
    LabConfig,
)
from pipelines.gradient_lab.long_range_tasks import (
    ADDING_BASELINE_MSE,
    RecallSpec,
    adding_problem,
    recall_problem,
)


def test_adding_problem_answer_lies_in_the_first_tenth_and_last_half():
    x, y = adding_problem(2000, 100, seed=0)
    markers = x[:, :, 1]
    assert (markers.sum(axis=1) == 2).all()
    first = markers.argmax(axis=1)
    second = 99 - markers[:, ::-1].argmax(axis=1)
    assert first.max() < 10 and second.min() >= 50
    rows = np.arange(2000)
    np.testing.assert_allclose(y[:, 0], x[rows, first, 0] + x[rows, second, 0], rtol=1e-6)
    # Predicting 1.0 scores the documented baseline.
    assert np.mean((y - 1.0) ** 2) == pytest.approx(ADDING_BASELINE_MSE, rel=0.1)
    np.testing.assert_array_equal(adding_problem(3, 20, seed=5)[0], adding_problem(3, 20, 5)[0])
    assert not np.array_equal(adding_problem(3, 20, seed=5)[0], adding_problem(3, 20, 6)[0])


def test_recall_problem_targets_are_the_first_symbols():
    spec = RecallSpec(n_symbols=5, recall_length=3, n_distractors=2)
    x, y = recall_problem(50, 40, seed=1, spec=spec)
    assert x.shape == (50, 40, spec.input_dim) and y.shape == (50, 3)
    ids = x.argmax(axis=-1)
    np.testing.assert_array_equal(ids[:, :3], y)
    assert ((ids[:, 3:-1] >= 5) & (ids[:, 3:-1] < 7)).all()
    assert (ids[:, -1] == spec.input_dim - 1).all()


@pytest.mark.parametrize("length", [0, 2])
def test_recall_problem_rejects_sequences_too_short(length):
    with pytest.raises(ValueError, match="length"):
        recall_problem(4, length, seed=0, spec=RecallSpec(recall_length=2))


def test_lab_config_rejects_a_curve_length_it_does_not_train():
    with pytest.raises(ValueError, match="curve_length"):
        LabConfig(lengths=(10, 50), curve_length=30).check()


def test_quick_lab_writes_every_output(tmp_path, capsys):
    run_dir = tmp_path / "lab"
    # --lengths replaces the quick sweep's lengths, sorted, once each (one lab run checks the
    # flag too); the clipping comparison moves to one of them.
    assert main(["lab", "gradients", "--quick", "--lengths", "9", "5", "9",
                 "--run-dir", str(run_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run_dir"] == str(run_dir)
    for name in (GRADIENT_PLOT, SUCCESS_PLOT, NORM_PLOT):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lab = json.loads((run_dir / LAB_FILE).read_text())
    config = dataclasses.replace(LabConfig.quick(), lengths=(5, 9), unclipped_lengths=(5,))
    assert config.lengths != LabConfig.quick().lengths
    expected = {(p, c, n, clipped) for p in config.problems for c in config.cells
                for n, clipped in [(n, True) for n in config.lengths]
                + [(n, False) for n in config.unclipped_lengths]}
    runs = lab["runs"]
    assert {(r["problem"], r["cell"], r["length"], r["clipped"]) for r in runs} == expected
    for r in runs:
        assert len(r["dhdt_init"]) == len(r["dhdt_trained"]) == r["length"]
        assert min(r["dhdt_init"]) >= 0 and r["dhdt_init"][-1] > 0
        assert 1 <= r["steps"] == len(r["grad_norm_history"]) <= config.train_steps
        assert r["learned"] == (r["skill"] >= config.success_skill)
        raw, applied = np.array(r["grad_norm_history"]), np.array(r["clipped_norm_history"])
        if r["clipped"]:
            # Keras clipnorm bounds each weight's gradient: the global norm by √(weights).
            assert (applied <= config.clipnorm * np.sqrt(r["weights"]) * 1.001).all()
            assert (applied <= raw * 1.001).all()
        else:
            np.testing.assert_allclose(applied, raw, rtol=1e-3)
    report = (run_dir / REPORT_FILE).read_text()
    for name in (GRADIENT_PLOT, SUCCESS_PLOT, NORM_PLOT):
        assert f"]({name})" in report
    adding = next(r for r in runs if r["problem"] == "adding" and r["clipped"])
    assert f"| LSTM | {adding['score']:.3f}" in report
    # A second lab into the same folder would replace these results.
    assert main(["lab", "gradients", "--quick", "--run-dir", str(run_dir)]) == 2
    assert "already holds a lab's results" in capsys.readouterr().err
    assert json.loads((run_dir / LAB_FILE).read_text()) == lab


def test_lab_refuses_bad_lengths(tmp_path, capsys, runs_root):
    assert main(["lab", "gradients", "--quick", "--lengths", "2",
                 "--run-dir", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "rnnkit: error: cannot run the lab: lengths must be from 3 to 2000" in err
    assert main(["lab", "gradients", "--quick", "--lengths", "100000"]) == 2
    assert "lengths must be from 3 to 2000" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before a folder is made
