"""Distributed training: two multi-worker processes on loopback and a two-device mirrored run train
the sentiment model on real IMDB reviews like one process with the same global batch.

The training runs happen in subprocesses (this file is also their script: `python
tests/test_distribute.py local|worker OUT`), because TensorFlow fixes its devices and collective
ops once per process.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script by the tests below
    sys.path.insert(0, str(REPO))

from pipelines.config import TrainConfig  # noqa: E402
from pipelines.training import distribute, optimizer  # noqa: E402
from serving.errors import UserError  # noqa: E402

# Small enough for about a minute on 2 busy cores; dropout off, so every strategy draws the same.
SMALL = ["max_train_examples=128", "epochs=1", "batch_size=32", "learning_rate=0.002",
         "max_tokens=2000", "max_length=48", "embedding_dim=16", "units=8", "dense_units=8",
         "dropout=0", "early_stopping_patience=3"]
TIMEOUT_S = 240
# Distance between final weights relative to their norm. Runs with the same global batch differ by
# the order of float sums and by odd last batches split unevenly over replicas (measured 0.0014
# after one epoch); one process with a global batch of 16 or 64 instead of 32 differs by 0.06.
WEIGHTS_RTOL = 0.01
VAL_LOSS_ATOL = 2e-3


# ---- the training subprocesses -----------------------------------------------------------------


def _flat(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([w.ravel() for w in weights if w.dtype.kind == "f"])


def _batches_seen(task, config, strategy, steps: int) -> list[list[str]]:
    """The first reviews (60 characters) of this process's share of the first training batches."""
    train_data, _ = task.datasets(config)
    data = strategy.experimental_distribute_dataset(distribute.shard_by_data(train_data))
    seen = []
    for text, _ in data:
        parts = strategy.experimental_local_results(text)
        seen.append([t.decode()[:60] for part in parts for t in part.numpy()])
        if len(seen) == steps:
            break
    return seen


def _clipping_matches_one_device() -> float:
    """Largest difference between one clipped Adam step on one device and on every replica."""
    import keras
    import tensorflow as tf

    x = np.linspace(-3, 3, 64, dtype="float32").reshape(32, 2) * 50.0  # gradients far above 1
    y = np.ones((32, 1), "float32")

    def step(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
            model.compile(optimizer.adam(0.1, clipnorm=1.0), loss="mse")
            distribute.prepare_fit(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(32))
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        return _flat(model.get_weights())

    mirrored = distribute.strategy_for(TrainConfig(strategy="mirrored"))
    return float(np.abs(step(tf.distribute.get_strategy()) - step(mirrored)).max())


def _run_local(out: Path) -> dict:
    """One epoch with the default strategy, then one mirrored over 2 logical CPUs."""
    import tensorflow as tf

    from pipelines.tasks import get_task
    from pipelines.training.trainer import train

    task = get_task("sentiment")
    report: dict = {}
    config = task.config("quick", SMALL)
    default = train(task, config, out / "default")
    report["default_epoch1"] = _flat(default.model.get_weights()).tolist()
    report["default_history"] = default.history
    report["default_steps"] = default.metrics["optimizer_steps"]
    report["default_wall_s"] = default.metrics["train_wall_time_s"]
    report["batches"] = _batches_seen(task, config, tf.distribute.get_strategy(), 4)

    mirrored = train(task, config.replace(strategy="mirrored"), out / "mirrored")
    report["mirrored_epoch1"] = _flat(mirrored.model.get_weights()).tolist()
    report["mirrored_history"] = mirrored.history
    report["mirrored_wall_s"] = mirrored.metrics["train_wall_time_s"]
    report["mirrored_replicas"] = mirrored.model.distribute_strategy.num_replicas_in_sync
    report["clipping_difference"] = _clipping_matches_one_device()
    return report


def _run_worker(run_dir: Path) -> dict:
    """One multi-worker process (TF_CONFIG set): 1 epoch, then resumed to 2 epochs."""
    from pipelines.tasks import get_task
    from pipelines.training.trainer import resume_config, train

    task = get_task("sentiment")
    config = task.config("quick", [*SMALL, "strategy=multi_worker"])
    first = train(task, config, run_dir)
    strategy = first.model.distribute_strategy
    report = {
        "chief": distribute.is_chief(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "result_run_dir": str(first.run_dir),
        "epoch1": _flat(first.model.get_weights()).tolist(),
        "initial_steps": first.metrics["optimizer_steps"],
        "wall_s": first.metrics["train_wall_time_s"],
        "batches": _batches_seen(task, config, strategy, 4),
    }
    resumed = train(task, resume_config(task, run_dir, ["epochs=2"]), run_dir, resume=True)
    report["history"] = resumed.history
    report["steps"] = resumed.metrics["optimizer_steps"]
    report["resumed_wall_s"] = resumed.metrics["train_wall_time_s"]
    report["resumed_final"] = _flat(resumed.model.get_weights()).tolist()
    return report


def _main(argv: list[str]) -> NoReturn:
    from serving.logging_setup import configure_logging

    configure_logging()
    mode, out = argv[0], Path(argv[1])
    if mode == "local":
        distribute.virtual_cpus(2)  # first, before TensorFlow initialises its devices
    import tensorflow as tf

    # Three processes share the cores: one thread per op keeps them from oversubscribing.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    report = _run_local(out.parent) if mode == "local" else _run_worker(Path(argv[2]))
    out.write_text(json.dumps(report))
    # After two trainings in one multi-worker process the chief's interpreter teardown waited
    # 1-2 minutes on TensorFlow's coordination service (until it declared the other worker
    # dead): run the exit handlers (autograph's deletes its temporary files), then leave.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---- helpers of the tests ----------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held together while choosing, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """This file as a script in its own process group (so that it can be killed whole)."""
    with log.open("w") as stderr:
        return subprocess.Popen([sys.executable, str(Path(__file__)), *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)


def _wait_all(procs: dict[str, subprocess.Popen], logs: dict[str, Path], timeout_s: float) -> None:
    """Wait for every process; on a failure, the deadline or an interrupt kill the rest."""
    deadline = time.monotonic() + timeout_s
    try:
        while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs.values()):
                break  # the others would wait for the failed one until TF's health check
            time.sleep(0.5)
    finally:
        hung = [n for n, p in procs.items() if p.poll() is None]
        for name in hung:
            os.killpg(procs[name].pid, signal.SIGKILL)
            procs[name].wait()
    failed = [n for n, p in procs.items() if p.returncode != 0]
    if failed:
        tails = "\n".join(f"--- {n} ---\n{logs[n].read_text()[-3000:]}" for n in procs)
        pytest.fail(f"failed or killed (after {timeout_s} s at most): {failed}, of which "
                    f"still running: {hung}\n{tails}")


def _relative_distance(weights: list[float], reference: list[float]) -> float:
    a, b = np.asarray(weights), np.asarray(reference)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def runs(shared_data, tfds_dir, tmp_path_factory):
    """The local (default + mirrored) process and two multi-worker processes, run side by side."""
    from pipelines.datasets import imdb

    imdb.prepare()  # once, before three processes read the TFDS cache
    base = tmp_path_factory.mktemp("distribute")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    procs, logs, outs, tmpdirs = {}, {}, {}, {}
    (base / "local").mkdir()
    outs["local"], logs["local"] = base / "local" / "report.json", base / "local.log"
    procs["local"] = _start(["local", str(outs["local"])], logs["local"], env)
    for index in range(2):
        name = f"worker{index}"
        tmpdirs[name] = base / f"{name}-tmp"
        tmpdirs[name].mkdir()
        outs[name], logs[name] = base / f"{name}.json", base / f"{name}.log"
        worker_env = {**env, "TMPDIR": str(tmpdirs[name]), "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs[name] = _start(["worker", str(outs[name]), str(base / "mw-run")], logs[name],
                             worker_env)
    started = time.monotonic()
    _wait_all(procs, logs, TIMEOUT_S)
    reports = {n: json.loads(outs[n].read_text()) for n in procs}
    reports["wall_s"] = time.monotonic() - started
    reports["run_dir"], reports["tmpdirs"] = base / "mw-run", tmpdirs
    reports["logs"] = {n: logs[n].read_text() for n in procs}
    return reports


# ---- tests -------------------------------------------------------------------------------------


def test_two_workers_train_like_one_process_with_the_same_global_batch(runs):
    local, chief, other = runs["local"], runs["worker0"], runs["worker1"]
    assert (chief["chief"], other["chief"]) == (True, False)
    assert chief["replicas"] == other["replicas"] == 2
    # Same number of optimizer steps per epoch: the global batch is split, not doubled.
    assert chief["initial_steps"] == other["initial_steps"] == local["default_steps"]
    # Both workers end with the same weights, and those are the single process's.
    assert _relative_distance(other["epoch1"], chief["epoch1"]) < 1e-6
    assert _relative_distance(chief["epoch1"], local["default_epoch1"]) < WEIGHTS_RTOL
    np.testing.assert_allclose(chief["history"]["val_loss"][:1],
                               local["default_history"]["val_loss"], atol=VAL_LOSS_ATOL)
    assert chief["history"] == other["history"]  # the logs are global: the same on both workers


def test_each_worker_gets_its_half_of_every_global_batch(runs):
    whole = runs["local"]["batches"]
    mine, theirs = runs["worker0"]["batches"], runs["worker1"]["batches"]
    assert len(whole) == len(mine) == len(theirs) == 4
    assert 32 in [len(batch) for batch in whole]  # a full global batch is among them
    for batch, a, b in zip(whole, mine, theirs, strict=True):
        assert sorted(a + b) == sorted(batch)  # together exactly the global batch...
        assert not set(a) & set(b)  # ...with no review on both workers...
        assert sorted([len(a), len(b)]) == [len(batch) // 2, len(batch) - len(batch) // 2]


def test_multi_worker_resume_continues_and_only_the_chief_writes(runs):
    local, chief, other = runs["local"], runs["worker0"], runs["worker1"]
    run_dir = runs["run_dir"]
    # Resumed from the chief's checkpoint, weights and optimizer state, on both workers: had
    # one started elsewhere, the same summed gradients would have left them apart.
    assert chief["steps"] == other["steps"] == 2 * local["default_steps"]
    assert len(chief["history"]["loss"]) == 2
    assert _relative_distance(other["resumed_final"], chief["resumed_final"]) < 1e-6
    # The worker reports the chief's run directory, and wrote nothing there or left anything.
    assert other["result_run_dir"] == chief["result_run_dir"] == str(run_dir)
    written = {name: re.findall(r"run directory: (\S+)", runs["logs"][name])
               for name in ("worker0", "worker1")}
    assert written["worker0"] == [str(run_dir)] * 2
    assert len(written["worker1"]) == 2
    assert all(Path(d).is_relative_to(runs["tmpdirs"]["worker1"]) for d in written["worker1"])
    assert not any(runs["tmpdirs"]["worker1"].iterdir())  # and deleted
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and state["task"] == "sentiment"


def test_mirrored_over_two_cpus_matches_the_default_strategy(runs):
    local = runs["local"]
    assert local["mirrored_replicas"] == 2
    assert _relative_distance(local["mirrored_epoch1"], local["default_epoch1"]) < WEIGHTS_RTOL
    np.testing.assert_allclose(local["mirrored_history"]["val_loss"],
                               local["default_history"]["val_loss"], atol=VAL_LOSS_ATOL)
    # clipnorm clips the gradient summed over replicas, as on one device.
    assert local["clipping_difference"] < 1e-5


@pytest.mark.parametrize(("tf_config", "message"), [
    (None, "needs the TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "index 1"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker"}}', "'ps'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 0}}', "task"),
])
def test_bad_tf_config_is_a_clear_error(tf_config, message, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(UserError, match=message):
        distribute.strategy_for(TrainConfig(strategy="multi_worker"))


def test_cluster_roles():
    workers = {"worker": ["a:1", "b:1", "c:1"]}
    roles = [distribute.cluster_role(json.dumps(
        {"cluster": workers, "task": {"type": "worker", "index": i}})) for i in range(3)]
    assert [r.is_chief for r in roles] == [True, False, False]
    assert {r.num_workers for r in roles} == {3}
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    chief = distribute.cluster_role(json.dumps({"cluster": with_chief,
                                                "task": {"type": "chief", "index": 0}}))
    worker0 = distribute.cluster_role(json.dumps({"cluster": with_chief,
                                                  "task": {"type": "worker", "index": 0}}))
    assert (chief.is_chief, worker0.is_chief, chief.num_workers) == (True, False, 3)


def test_unknown_strategy_and_uneven_batch_are_user_errors():
    with pytest.raises(UserError, match="unknown strategy 'tpu'"):
        distribute.strategy_for(TrainConfig(strategy="tpu"))

    class TwoReplicas:
        num_replicas_in_sync = 2

    with pytest.raises(UserError, match="batch_size=33 does not split evenly over 2"):
        distribute.check_batch_size(33, TwoReplicas())
    assert distribute.check_batch_size(64, TwoReplicas()) == 32


def test_cli_strategy_flag_reaches_the_trainer(monkeypatch, tmp_path, capsys):
    from app.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("RNNKIT_RUNS_DIR", str(tmp_path))
    # No TF_CONFIG: the trainer refuses before reading any data or writing any file.
    code = main(["train", "sentiment", "--strategy", "multi_worker", "--run-dir",
                 str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "TF_CONFIG" in err[0]
    assert not (tmp_path / "run").exists()


if __name__ == "__main__":
    _main(sys.argv[1:])


def _lone_worker(tmp_path, *flags: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of worker 0 of 2 whose peer is never started."""
    ports = _free_ports(2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "",
           "TF_CONFIG": json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                    "task": {"type": "worker", "index": 0}})}
    data = tmp_path / "rows.csv"
    data.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(40)))
    return ([sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())",
             "train", "classify", "--data", str(data), "--strategy", "multi_worker",
             "--run-dir", str(tmp_path / "run"), *flags], env)


def test_a_worker_whose_peer_never_joins_ends_after_the_join_timeout(tmp_path):
    """TensorFlow waits for every worker with no timeout; ours ends the wait with one line."""
    command, env = _lone_worker(tmp_path, "--set", "join_timeout_minutes=0.1")
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=180)
    errors = [line for line in done.stderr.splitlines() if line.startswith("rnnkit: error")]
    # Ended by its watchdog with SIGKILL (TensorFlow's wait holds the interpreter, and catches
    # SIGTERM): a shell reports status 137.
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert errors == [
        "rnnkit: error: not every worker of the 2 in TF_CONFIG's cluster joined within 0.1 "
        "minutes — start each one with the same TF_CONFIG cluster and check that they reach "
        "each other's addresses, or wait longer with --set join_timeout_minutes=..."]
    assert time.monotonic() - started < 120
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ctrl_c_ends_a_worker_waiting_for_a_missing_peer(tmp_path):
    """The strategy waits inside TensorFlow for every worker, with no timeout; Ctrl-C there
    did nothing (only `kill -9` ended it). Now it ends the process at once."""
    command, env = _lone_worker(tmp_path)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while b"waiting for every worker to join" not in log.read_bytes():
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(2)  # inside TensorFlow's wait
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=10) != 0
    finally:
        worker.kill()
        worker.wait()
    assert not (tmp_path / "run" / "checkpoints").exists()
