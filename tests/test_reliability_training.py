"""Training, export and data under faults: a run killed with SIGKILL mid-epoch resumes to the
metrics of an uninterrupted run; checkpoints and exports are never seen half-written; bad data
fails in one line naming the file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from serving_harness import export_test_model, wait_for

from app.cli import main as cli_main
from pipelines.datasets import imdb
from pipelines.tasks import get_task
from pipelines.training.checkpoints import MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, CheckpointStore
from pipelines.training.run_dir import CHECKPOINTS_DIR

REPO = Path(__file__).resolve().parent.parent
# A small sentiment model on 400 real reviews: two short epochs.
SMALL = ["max_train_examples=400", "epochs=2", "batch_size=32", "max_length=32",
         "max_tokens=2000", "embedding_dim=16", "units=8", "dense_units=8",
         "early_stopping_patience=5", "seed=7"]
# A resumed epoch sees the data in another shuffle order (the shuffle restarts with the
# process), so its metrics match the uninterrupted run's up to that noise (45 validation reviews).
TOLERANCE = {"val_loss": 0.02, "val_auc": 0.1, "val_accuracy": 0.12}


def train_process(run_dir: Path, *extra: str) -> subprocess.Popen:
    """`rnnkit train sentiment` on the small settings in a subprocess (stderr piped)."""
    overrides = [] if "--resume" in extra else [arg for item in SMALL for arg in ("--set", item)]
    return subprocess.Popen([sys.executable, "-m", "app.cli", "train", "sentiment",
                             "--run-dir", str(run_dir), *overrides, *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Lines:
    """Collects a pipe's lines in a thread, so a test can wait for one."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(pipe), daemon=True)
        self._thread.start()

    def seen(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def join(self) -> str:
        self._thread.join(30)
        return "".join(self.lines)


class CheckpointWatcher:
    """Looks at a run's checkpoints every few milliseconds while it trains.

    Each time state.json exists it must parse and name a folder holding the model and the
    optimizer state; temporary folders are counted to show the watcher saw saves in progress.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / CHECKPOINTS_DIR
        self.looks = self.saves_in_progress = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            try:
                names = [p.name for p in self.path.iterdir()]
                text = (self.path / STATE_FILE).read_text()
            except (FileNotFoundError, NotADirectoryError):
                continue
            self.looks += 1
            self.saves_in_progress += any(name.startswith(".tmp-epoch") for name in names)
            try:
                folder = self.path / json.loads(text)["last"]
            except (ValueError, KeyError) as err:
                self.problems.append(f"state.json unreadable: {err}: {text[:80]!r}")
                continue
            for name in (MODEL_FILE, OPTIMIZER_FILE):
                if not (folder / name).is_file():
                    self.problems.append(f"state.json names {folder.name} without {name}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def finished(process: subprocess.Popen, errors: Lines, what: str) -> tuple[dict, str]:
    """Wait for a training process; return its JSON summary (stdout) and its log (stderr)."""
    out = process.stdout.read()
    process.wait(600)
    log = errors.join()
    assert process.returncode == 0, f"{what} failed:\n{log[-3000:]}"
    assert "Traceback" not in log
    return json.loads(out.strip().splitlines()[-1]), log


def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(reviews, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # Both runs start together: the uninterrupted one is the reference.
    reference = train_process(whole)
    reference_log = Lines(reference.stderr)
    watcher = CheckpointWatcher(whole)
    victim = train_process(killed)
    victim_log = Lines(victim.stderr)
    store = CheckpointStore(killed)

    # Killed right after epoch 1's checkpoint, inside epoch 2. Not timed by the "Epoch 2/2"
    # log line: it reaches the pipe only when the child's output is flushed, which on a fast
    # machine can be after epoch 2 has ended.
    wait_for(lambda: (store.state() or {}).get("epoch") == 1 or victim.poll() is not None,
             timeout=300, interval=0.01)
    time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    victim_log.join()

    # Killed mid-epoch: the last complete checkpoint is epoch 1, whole and loadable.
    state = store.state()
    assert state["epoch"] == 1 and state["last"] == "epoch-0001", state
    names = sorted(p.name for p in (killed / CHECKPOINTS_DIR).iterdir())
    assert [n for n in names if not n.startswith(".tmp-")] == ["epoch-0001", STATE_FILE], names
    get_task("sentiment")  # registers the model's Keras objects, as every command does
    assert store.load_model("last").count_params() > 0

    resumed = train_process(killed, "--resume")
    resumed_summary, log = finished(resumed, Lines(resumed.stderr), "the resumed run")
    reference_summary, _ = finished(reference, reference_log, "the uninterrupted run")
    watcher.stop()
    steps_per_epoch = reference_summary["optimizer_steps"] // 2
    # It continued from epoch 1's weights and optimizer state, not from scratch.
    assert f"at epoch 1 of 2 (optimizer step {steps_per_epoch})" in log

    assert resumed_summary["resumed"] and resumed_summary["epochs_finished"] == 2
    assert resumed_summary["optimizer_steps"] == reference_summary["optimizer_steps"]
    history = json.loads((killed / "history.json").read_text())
    reference_history = json.loads((whole / "history.json").read_text())
    assert len(history["val_loss"]) == len(reference_history["val_loss"]) == 2
    for key in ("loss", "val_loss", "val_accuracy"):  # epoch 1 ran the same in both
        assert history[key][0] == pytest.approx(reference_history[key][0], abs=1e-4), key
    final = resumed_summary["at_best_epoch"]
    expected = reference_summary["at_best_epoch"]
    print(f"\nkill -9 in epoch 2, resumed: {json.dumps(final)}\nuninterrupted: "
          f"{json.dumps(expected)}")
    for key, tolerance in TOLERANCE.items():
        assert final[key] == pytest.approx(expected[key], abs=tolerance), key
    assert watcher.problems == [] and watcher.looks > 50
    print(f"checkpoint watcher: {watcher.looks} looks, "
          f"{watcher.saves_in_progress} during a save, no half-written checkpoint")


def test_exports_in_a_loop_are_never_seen_half_written(tmp_path):
    from serving.export import existing_versions
    from serving.model_manager import AVAILABLE
    from serving.model_server import ModelServer, ServerOptions

    base = tmp_path / "textual"
    export_test_model(tmp_path, "textual")
    # A folder left by an export killed half-way: hidden, so never taken for a version.
    (base / ".tmp-2-99999-abcd").mkdir()
    (base / ".tmp-2-99999-abcd" / "saved_model.pb").write_bytes(b"half")
    # No load retries: the half-written control below must fail at once, not be retried for
    # TF's default 5 minutes (5 tries, 1 min apart).
    server = ModelServer(ServerOptions(port=0, rest_api_port=0, model_name="textual",
                                       model_base_path=str(base),
                                       file_system_poll_wait_seconds=0.05,
                                       enable_model_warmup=False, max_num_load_retries=0))
    server.start()
    manager = server.manager

    def failures() -> list[str]:
        return [f"{s.version}: {s.error.message}" for s in manager.status("textual")
                if s.error is not None]

    def newest_available() -> int:
        return max(s.version for s in manager.status("textual") if s.state == AVAILABLE)

    try:
        for round_ in range(3):
            version = int(export_test_model(tmp_path, "textual", offset=float(round_)).name)
            wait_for(lambda v=version: newest_available() == v, timeout=60, interval=0.05)
        assert failures() == []
        assert existing_versions(base) == [1, 2, 3, 4]
        page = server.metrics.render_prometheus()
        assert 'status="fail"' not in page and page.count('status="success"') >= 4

        # The control: a version copied in place file by file is caught half-written.
        target = base / "5"
        target.mkdir()
        (target / "saved_model.pb").write_bytes((base / "4" / "saved_model.pb").read_bytes())
        wait_for(lambda: any(s.version == 5 and s.error for s in manager.status("textual")),
                 timeout=30, interval=0.05)
        assert "5:" in " ".join(failures())
    finally:
        server.stop()


def run_cli(capsys, *args: str) -> tuple[int, list[str]]:
    """Run `rnnkit ARGS` in this process; returns the exit code and rnnkit's error lines."""
    code = cli_main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, [line for line in captured.err.splitlines() if line.startswith("rnnkit: ")]


def test_bad_data_fails_in_one_line_naming_the_file(shared_data, capsys, monkeypatch, tmp_path):
    archive = shared_data / imdb.MIRROR_FOLDER / imdb.ARCHIVE
    monkeypatch.setenv("RNNKIT_RUNS_DIR", str(tmp_path / "runs"))

    def refusal(data_dir: Path) -> str:
        """The one line `rnnkit train sentiment` exits 2 with, reading a fresh data dir."""
        monkeypatch.setenv("RNNKIT_DATA_DIR", str(data_dir))
        monkeypatch.setenv("RNNKIT_TFDS_DIR", str(tmp_path / f"tfds-{data_dir.name}"))
        code, lines = run_cli(capsys, "train", "sentiment", "--set", "epochs=1")
        assert code == 2 and len(lines) == 1
        return lines[0]

    missing = tmp_path / "missing"
    missing.mkdir()
    line = refusal(missing)
    assert f"{missing / 'imdb' / imdb.ARCHIVE} does not exist" in line

    truncated = tmp_path / "truncated"
    (truncated / "imdb").mkdir(parents=True)
    with archive.open("rb") as source:
        (truncated / "imdb" / imdb.ARCHIVE).write_bytes(source.read(1 << 20))
    line = refusal(truncated)
    assert f"cannot read the IMDB archive {truncated / 'imdb' / imdb.ARCHIVE}" in line

    empty = tmp_path / "empty"
    (empty / "imdb").mkdir(parents=True)
    make_archive_without_training_reviews(empty / "imdb" / imdb.ARCHIVE)
    line = refusal(empty)
    assert str(empty / "imdb" / imdb.ARCHIVE) in line and '"train"' in line

    # The setting fails before any data is read.
    monkeypatch.setenv("RNNKIT_DATA_DIR", str(shared_data))
    monkeypatch.setenv("RNNKIT_TFDS_DIR", str(tmp_path / f"tfds-{shared_data.name}"))
    code, lines = run_cli(capsys, "train", "sentiment", "--set", "max_train_examples=0")
    assert code == 2 and lines == [
        "rnnkit: error: max_train_examples=0 leaves no training reviews — use e.g. --set "
        "max_train_examples=2000, or leave it unset for all"]


def make_archive_without_training_reviews(path: Path) -> None:
    """A well-formed aclImdb archive holding a few test reviews and no training reviews."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for index, label in enumerate(["pos", "neg"] * 2):
            data = f"review {index}: {'great' if label == 'pos' else 'dull'} film".encode()
            info = tarfile.TarInfo(f"aclImdb/test/{label}/{index}_7.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

