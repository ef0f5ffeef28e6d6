"""The main job's progress file: what `rnnkit run` is doing, for the web page and `rnnkit runs`.

`rnnkit run` rewrites `<runs dir>/.run-progress.json` (atomically) whenever a task changes state.
A training task's epoch and curves are read from its run dir's history.json, which the trainer
writes after every epoch, so the page follows each epoch without the job writing more.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

PROGRESS_FILE = ".run-progress.json"
# A task's states in order; `failed`, `skipped` and `interrupted` end it early.
STATES = ("waiting", "preparing", "training", "exporting", "evaluating", "done")
ACTIVE = ("preparing", "training", "exporting", "evaluating")


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write JSON next to the target and rename it into place, so readers never see half."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Progress:
    """Writes the progress file of one `rnnkit run`.

    Args:
        root: the runs dir.
        tasks: task name -> served model name, in run order.
        profile: the training profile.
    """

    def __init__(self, root: Path, tasks: dict[str, str], profile: str) -> None:
        self.path = Path(root) / PROGRESS_FILE
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {
            "pid": os.getpid(), "started": time.time(), "profile": profile, "state": "running",
            "serving": None,
            "tasks": [{"task": name, "model": model, "state": "waiting"}
                      for name, model in tasks.items()]}
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data["updated"] = time.time()
        _write(self.path, self.data)

    def task(self, name: str, state: str, **fields: Any) -> None:
        """Set one task's state and any other fields (run_dir, epochs, error, test, export).

        Args:
            name: the task.
            state: one of STATES, or failed / skipped / interrupted.
            **fields: more facts about the task, kept until replaced.
        """
        with self._lock:
            entry = next(t for t in self.data["tasks"] if t["task"] == name)
            entry.update(fields, state=state, since=time.time())
            self._save()

    def serving(self, urls: dict[str, str] | None) -> None:
        """Record where the models and the page are served (None: no longer served)."""
        with self._lock:
            self.data["serving"] = urls
            self._save()

    def finish(self, state: str) -> None:
        """Mark the job `finished` or `interrupted` (a task still active becomes interrupted)."""
        with self._lock:
            self.data["state"] = state
            for entry in self.data["tasks"]:
                if entry["state"] in ACTIVE:
                    entry["state"] = "interrupted"
            self._save()


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _live_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """The run's history (its curves) and the epoch it reached, read from the run dir."""
    run_dir = entry.get("run_dir")
    if not run_dir:
        return {}
    history = _read(Path(run_dir) / "history.json")
    if not isinstance(history, dict):
        return {"epoch": 0, "history": {}}
    epoch = max((len(v) for v in history.values() if isinstance(v, list)), default=0)
    return {"epoch": epoch, "history": history}


def read_progress(root: Path) -> dict[str, Any] | None:
    """The last `rnnkit run`'s progress with each task's live epoch and curves; None if none.

    A job whose process is gone without saying so (killed) reads as `stopped`, its active task
    as interrupted, and it serves nothing.

    Args:
        root: the runs dir.
    """
    data = _read(Path(root) / PROGRESS_FILE)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        return None
    alive = _alive(data.get("pid"))
    if not alive:
        data["serving"] = None
        if data.get("state") == "running":
            data["state"] = "stopped"
            for entry in data["tasks"]:
                if entry.get("state") in ACTIVE:
                    entry["state"] = "interrupted"
    for entry in data["tasks"]:
        entry.update(_live_fields(entry))
        entry["label"] = describe(entry, serving=bool(data.get("serving")))
    return data


def describe(entry: dict[str, Any], serving: bool = False) -> str:
    """One line about a task: `training: epoch 2 of 5`, `served: accuracy 0.871`, ...

    Args:
        entry: the task's progress (with the live fields of read_progress).
        serving: whether the job is serving its exports.
    """
    state = entry.get("state", "waiting")
    if state == "training":
        text = f"training: epoch {entry.get('epoch', 0)} of {entry.get('epochs', '?')}"
        loss = (entry.get("history") or {}).get("loss") or []
        return text + (f", loss {loss[-1]:.4f}" if loss else "")
    if state == "preparing":
        return "preparing data"
    if state == "evaluating" and serving and entry.get("export"):
        return "served; evaluating on the test split"
    if state in ("failed", "skipped"):
        return f"{state}: {entry.get('error', '')}".rstrip(": ")
    if state == "done":
        metrics = ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in (entry.get("test") or {}).items())
        return ("served" if serving else "done") + (f": {metrics}" if metrics else "")
    if state == "interrupted":
        return "interrupted (resumes on the next `rnnkit run`)"
    return state
