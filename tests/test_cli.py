"""The data/train/evaluate/export/runs/run commands end to end, and their user errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from serving_harness import free_port, http

from app.cli import main

TINY = ["--set", "max_train_examples=300", "--set", "max_eval_examples=200",
        "--set", "max_tokens=2000", "--set", "batch_size=32", "--set", "units=8"]


def _json_out(capsys) -> dict:
    """The command's stdout, which must be exactly one JSON object."""
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout is not one JSON line: {out!r}"
    return json.loads(lines[0])


def test_data_prepare_imdb(reviews, capsys):
    assert main(["data", "prepare", "imdb"]) == 0
    summary = _json_out(capsys)
    assert summary["splits"]["train"] == 25_000 and summary["splits"]["test"] == 25_000


def test_train_resume_evaluate_export_runs(reviews, runs_root, tmp_path, capsys):
    run_dir = runs_root / "sentiment_bow" / "mine"
    assert main(["train", "sentiment_bow", "--run-dir", str(run_dir), "--cell", "gru",
                 "--set", "epochs=1", *TINY]) == 0
    trained = _json_out(capsys)
    assert trained["run_dir"] == str(run_dir) and trained["epochs_finished"] == 1
    assert json.loads((run_dir / "config.json").read_text())["cell"] == "gru"

    assert main(["train", "sentiment_bow", "--run-dir", str(run_dir), "--resume",
                 "--set", "epochs=2"]) == 0
    resumed = _json_out(capsys)
    assert resumed["epochs_finished"] == 2 and resumed["resumed"]

    assert main(["evaluate", "sentiment_bow", "--run-dir", str(run_dir)]) == 0
    evaluation = _json_out(capsys)
    for key in ("accuracy", "f1", "roc_auc", "confusion_matrix", "n_examples", "wall_time_s"):
        assert key in evaluation
    assert evaluation["n_examples"] == 200
    assert json.loads((run_dir / "evaluation.json").read_text()) == evaluation

    exports = tmp_path / "exports"
    assert main(["export", "sentiment_bow", "--run-dir", str(run_dir),
                 "--base-path", str(exports)]) == 0
    exported = _json_out(capsys)
    assert exported["version"] == 1
    assert (exports / "sentiment_bow" / "1" / "saved_model.pb").is_file()

    assert main(["runs", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["run_dir"] for r in listed] == [str(run_dir)]
    assert listed[0]["evaluation"]["accuracy"] == evaluation["accuracy"]
    assert main(["runs"]) == 0
    assert "mine" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "no_such_task"], "unknown task"),
    (["train", "sentiment", "--set", "no_such_setting=1"], "cannot apply setting"),
    (["train", "sentiment", "--set", "epochs=many"], "not a valid int"),
    (["train", "sentiment", "--profile", "huge"], "unknown profile"),
    (["train", "sentiment", "--resume"], "found no run"),
    (["evaluate", "sentiment"], "no trained run"),
    (["data", "prepare", "no_such_data"], "unknown data set"),
])
def test_user_errors_exit_2_with_one_line(argv, message, runs_root, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("rnnkit: error:")
    assert "Traceback" not in "\n".join(err)


def test_run_dir_errors(runs_root, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "sentiment", "--run-dir", str(empty)]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert main(["export", "sentiment", "--run-dir", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "sentiment", "--run-dir", str(empty), "--resume"]) == 2
    assert "has no checkpoint" in capsys.readouterr().err

    # Damaged run files mark their run in `rnnkit runs`; the others are still listed.
    for name, metrics in (("a", "[1, 2]"), ("b", ""), ("c", '{"epochs_finished": 3}')):
        run = runs_root / "classify" / name
        run.mkdir(parents=True)
        (run / "config.json").write_text("{}")
        (run / "metrics.json").write_text(metrics)
    assert main(["runs"]) == 0
    listed = {line.split()[1].rsplit("/", 1)[-1]: line for line in
              capsys.readouterr().out.splitlines()[1:]}
    assert "damaged: metrics.json" in listed["a"] and "damaged: metrics.json" in listed["b"]
    assert "finished" in listed["c"] and "damaged" not in listed["c"]
    # A half-written config, a lost checkpoint, a run filed under another task: damaged too.
    (runs_root / "classify" / "a" / "config.json").write_text('{"epochs": ')
    lost = runs_root / "classify" / "c" / "checkpoints"
    lost.mkdir()
    (lost / "state.json").write_text('{"task": "tag", "best": "epoch-0002", "last": '
                                     '"epoch-0002"}')
    assert main(["runs", "classify"]) == 0
    listed = {line.split()[1].rsplit("/", 1)[-1]: line for line in
              capsys.readouterr().out.splitlines()[1:]}
    assert "config.json is damaged" in listed["a"]
    assert "trained for task 'tag', filed under 'classify'" in listed["c"]
    assert "its best checkpoint epoch-0002 is missing" in listed["c"]
    assert main(["runs", "clasify"]) == 2
    assert "unknown task 'clasify'" in capsys.readouterr().err


def _run_summary(out: str) -> dict:
    """The JSON object `rnnkit run` prints first on stdout (a readable summary follows it)."""
    summary, _ = json.JSONDecoder().raw_decode(out.lstrip())
    return summary


@pytest.fixture()
def tiny_sentiment(monkeypatch):
    """A `tiny` profile of the sentiment task that trains in seconds."""
    from pipelines.tasks.sentiment import SentimentTask

    tiny = {"epochs": 1, "max_train_examples": 300, "max_eval_examples": 200,
            "max_tokens": 2000, "batch_size": 32, "units": 8, "embedding_dim": 16,
            "dense_units": 8, "max_length": 60, "cell": "gru"}
    monkeypatch.setitem(SentimentTask.profiles, "tiny", tiny)


def _progress(app: int) -> dict:
    """The web app's view of the main job (raises OSError while the app is not up)."""
    return http("GET", f"http://127.0.0.1:{app}/api/progress")[1]["progress"]


def _run_probed(command: list[str], probe: Any) -> tuple[int, dict, int, int]:
    """Run `rnnkit run` on free ports while `probe(rest, app, seen)` watches it in a thread.

    Returns:
        The exit code, what the probe saw, and the REST and web app ports.
    """
    grpc_port, rest, app = free_port(), free_port(), free_port()
    seen: dict = {}
    prober = threading.Thread(target=probe, args=(rest, app, seen))
    prober.start()
    code = main([*command, "--port", str(grpc_port), "--rest-port", str(rest),
                 "--app-port", str(app)])
    prober.join()
    return code, seen, rest, app


def _probe_then_interrupt(rest: int, app: int, seen: dict) -> None:
    """Wait for the served model and the web app, record what they answer, wait for the job
    to finish, then press Ctrl-C."""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                _, reply = http("GET", f"http://127.0.0.1:{rest}/v1/models/sentiment")
            except OSError:
                time.sleep(0.2)
                continue
            if "model_version_status" not in reply:
                time.sleep(0.2)
                continue
            seen["status"] = reply
            seen["predict"] = http("POST", f"http://127.0.0.1:{rest}/v1/models/sentiment:predict",
                                   {"instances": ["A wonderful, moving film."]})
            seen["page"] = http("GET", f"http://127.0.0.1:{app}/")[0]
            while time.monotonic() < deadline and _progress(app)["state"] == "running":
                time.sleep(0.2)
            seen["progress"] = _progress(app)
            break
    finally:
        os.kill(os.getpid(), signal.SIGINT)


def test_run_trains_once_then_reuses_and_serves(reviews, runs_root, tmp_path, capsys,
                                                 tiny_sentiment):
    exports = tmp_path / "exports"
    common = ["run", "--profile", "tiny", "--tasks", "sentiment", "--base-path", str(exports)]
    assert main([*common, "--no-serve"]) == 0
    out = capsys.readouterr().out
    first = _run_summary(out)["tasks"][0]
    assert first["trained_now"] and first["export"] == str(exports / "sentiment" / "1")
    assert 0.0 <= first["test"]["accuracy"] <= 1.0
    assert "summary (test split):" in out and "sentiment" in out.split("summary")[1]

    # The second run serves at once, reuses the run and its export, and Ctrl-C stops it.
    code, seen, rest, app = _run_probed(common, _probe_then_interrupt)
    assert code == 0
    out = capsys.readouterr().out
    # The URLs come first, the summary when the job is done.
    urls_at = out.index(f"http://127.0.0.1:{app}")
    second = _run_summary(out[urls_at:][out[urls_at:].index("{"):])["tasks"][0]
    assert not second["trained_now"]
    assert second["run_dir"] == first["run_dir"] and second["export"] == first["export"]
    assert sorted(p.name for p in (exports / "sentiment").iterdir()) == ["1"]
    assert seen["status"]["model_version_status"][0]["state"] == "AVAILABLE"
    status, reply = seen["predict"]
    assert status == 200 and 0.0 <= reply["predictions"][0]["probability"] <= 1.0
    assert seen["page"] == 200
    task = seen["progress"]["tasks"][0]
    assert seen["progress"]["state"] == "finished" and task["state"] == "done"
    assert task["label"].startswith("served: accuracy ")
    for port in (rest, app):  # both stopped listening
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _interrupt_mid_training(rest: int, app: int, seen: dict) -> None:
    """Record the page and the model server while the first epochs train, then press Ctrl-C."""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                task = _progress(app)["tasks"][0]
            except OSError:
                time.sleep(0.1)
                continue
            seen.setdefault("first", task)
            if task["state"] == "training" and task.get("epoch", 0) >= 1:
                seen["training"] = task
                seen["model"] = http("GET", f"http://127.0.0.1:{rest}/v1/models/sentiment")
                seen["page_models"] = http("GET", f"http://127.0.0.1:{app}/api/models")[1]
                break
            time.sleep(0.1)
    finally:
        os.kill(os.getpid(), signal.SIGINT)


def test_run_serves_first_and_resumes_an_interrupted_run(reviews, runs_root, tmp_path, capsys,
                                                         tiny_sentiment, monkeypatch):
    from pipelines.tasks.sentiment import SentimentTask

    monkeypatch.setitem(SentimentTask.profiles["tiny"], "epochs", 8)
    monkeypatch.setitem(SentimentTask.profiles["tiny"], "early_stopping_patience", 100)
    exports = tmp_path / "exports"
    common = ["run", "--profile", "tiny", "--tasks", "sentiment", "--base-path", str(exports)]
    code, seen, _, _ = _run_probed(common, _interrupt_mid_training)
    assert code == 0
    # The page answered before anything was trained, and showed the epochs as they came.
    assert seen["first"]["state"] in ("waiting", "preparing", "training")
    assert seen["training"]["epochs"] == 8 and 1 <= seen["training"]["epoch"] < 8
    assert seen["training"]["label"].startswith(f"training: epoch {seen['training']['epoch']} "
                                                "of 8, loss ")
    assert "model_version_status" not in seen["model"][1]  # nothing exported yet
    listed = {m["name"]: m for m in seen["page_models"]["models"]}
    assert listed["sentiment"]["state"] == "NOT_LOADED"
    assert listed["sentiment"]["message"].startswith("not served yet: rnnkit run: training: epoch")
    run_dir = Path(seen["training"]["run_dir"])
    assert not (run_dir / "metrics.json").exists()
    assert not (exports / "sentiment").exists()  # the empty planned folder was tidied away
    capsys.readouterr()

    main(["runs"])
    assert "sentiment      interrupted (resumes on the next `rnnkit run`)" in \
        capsys.readouterr().out

    # The next run resumes the interrupted run instead of starting again.
    assert main([*common, "--no-serve"]) == 0
    summary = _run_summary(capsys.readouterr().out)["tasks"][0]
    assert summary["run_dir"] == str(run_dir) and summary["resumed"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed"] and metrics["epochs_finished"] == 8


def test_run_on_a_busy_port_fails_in_one_line_and_leaves_nothing(runs_root, tmp_path, capsys,
                                                                 tiny_sentiment):
    exports = tmp_path / "exports"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["run", "--profile", "tiny", "--tasks", "sentiment", "--base-path",
                     str(exports), "--port", str(free_port()), "--rest-port", str(free_port()),
                     "--app-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"rnnkit: error: cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err
    assert list(exports.iterdir()) == []  # no planned model folder, no models.config


def test_run_skips_tasks_without_data(reviews, runs_root, tmp_path, capsys, tiny_sentiment,
                                      monkeypatch):
    from pipelines.datasets import flickr8k
    from serving.errors import DataUnavailable

    def unavailable():
        raise DataUnavailable("Flickr8k archives ['Flickr8k_Dataset.zip'] not found in /nowhere",
                              "put them there")

    monkeypatch.setattr(flickr8k, "prepare", unavailable)
    # A task that fails (here: a bug in its training) is reported in one line; the others go on.
    from pipelines.tasks.captioning import CaptioningTask
    from pipelines.tasks.sentiment import SentimentBowTask
    from pipelines.training import trainer

    for task_class in (SentimentBowTask, CaptioningTask):  # `--profile tiny` must exist for all
        monkeypatch.setitem(task_class.profiles, "tiny", {})
    real_train = trainer.train

    def train(task, *args, **kwargs):
        if task.name == "sentiment_bow":
            raise RuntimeError("the GPU caught fire\nsecond line")
        return real_train(task, *args, **kwargs)

    monkeypatch.setattr(trainer, "train", train)
    assert main(["run", "--profile", "tiny", "--tasks", "sentiment_bow", "sentiment",
                 "captioning", "--base-path", str(tmp_path / "exports"), "--no-serve"]) == 1
    out = capsys.readouterr().out
    summary = _run_summary(out)
    assert [item["task"] for item in summary["tasks"]] == ["sentiment"]
    assert "not found in /nowhere" in summary["skipped"]["captioning"]
    assert summary["failed"] == {"sentiment_bow": "RuntimeError: the GPU caught fire"}
    assert "sentiment_bow  FAILED: RuntimeError: the GPU caught fire" in out
    main(["runs"])
    job = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert job[0].startswith("rnnkit run (tiny profile, started ") and job[0].endswith("finished")
    test = summary["tasks"][0]["test"]
    assert job[1:] == ["  sentiment_bow  failed: RuntimeError: the GPU caught fire",
                       f"  sentiment      done: accuracy {test['accuracy']:.3f}, "
                       f"f1 {test['f1']:.3f}, roc_auc {test['roc_auc']:.3f}",
                       "  captioning     skipped: Flickr8k archives ['Flickr8k_Dataset.zip'] not "
                       "found in /nowhere — put them there"]

    # With every task's data missing the job fails with one line, no traceback.
    assert main(["run", "--tasks", "captioning", "--no-serve"]) == 2
    err = capsys.readouterr().err
    assert "rnnkit: error: no task could run: Flickr8k archives" in err
    assert "Traceback" not in err


def test_bench_runs_the_named_benchmark_with_its_flags(capfd):
    assert main(["bench", "layers", "--", "--help"]) == 0
    assert "--kinds" in capfd.readouterr().out  # bench/layers.py's own flags
    assert main(["bench", "layers", "--kinds", "NoSuchLayer"]) == 2  # its own argparse error
    assert "invalid choice" in capfd.readouterr().err


def test_output_into_a_closed_pipe_ends_quietly():
    """`rnnkit evaluate ... | head` closes the pipe early: no BrokenPipeError traceback."""
    import subprocess
    import sys

    body = ("import sys; from serving.errors import exit_status\n"
            "def body():\n"
            "    for _ in range(200_000): print('{\"a\": 1}')\n"
            "sys.exit(exit_status(body))\n")
    process = subprocess.Popen([sys.executable, "-c", body], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    assert process.stdout.read(10)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=30) == 141 and "Traceback" not in err and "Broken" not in err


def test_run_checks_its_folders_and_ports_before_starting(runs_root, tmp_path, capsys):
    taken = tmp_path / "file"
    taken.write_text("mine")
    assert main(["run", "--tasks", "sentiment", "--no-serve", "--base-path", str(taken)]) == 2
    assert f"--base-path {taken} cannot be a folder" in capsys.readouterr().err
    assert main(["run", "--tasks", "sentiment", "--base-path", str(tmp_path / "exports"),
                 "--port", "18610", "--rest-port", "18610"]) == 2
    assert "--port and --rest-port are both 18610" in capsys.readouterr().err
    assert taken.read_text() == "mine" and not (runs_root / "sentiment").exists()
