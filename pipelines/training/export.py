"""Export a trained run: its best checkpoint as a served model, with its task's signatures.

The SavedModel writing itself (TF Serving's layout, atomic versions) is `serving.export`; this is
the training side that knows runs, checkpoints and tasks, beside `pipelines.training.evaluation`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.training.checkpoints import CheckpointStore
from pipelines.training.run_dir import load_config
from serving.errors import UserError
from serving.export import (
    MODEL_NAME,
    PROVENANCE_FILE,
    WARMUP_FILE,
    existing_versions,
    export_provenance,
    export_saved_model,
    version_number,
    warmup_file,
)

if TYPE_CHECKING:
    from pipelines.training.task import Task


def export_run(task: Task, run_dir: Path, base_path: Path | str,
               model_name: str | None = None) -> Path:
    """Export a trained run's best model with its task's signatures and warm-up requests.

    Args:
        task: the run's task (signatures, method names, warm-up requests, model name).
        run_dir: the trained run directory.
        base_path: the exports folder.
        model_name: the served model's name; None for `task.default_export_name` (the data
            file's stem, or the task's export name).
    """
    config = load_config(run_dir, task.config_class)
    if model_name is not None and not model_name.strip():
        raise UserError("--model-name is empty",
                        "give the served model a name, or leave --model-name out for the "
                        "default (the data file's stem)")
    name = model_name or task.default_export_name(config)
    if not MODEL_NAME.match(name):
        raise UserError(f"model name {name!r} is not usable as a served model's name",
                        "pass --model-name with letters, digits, '_', '-' or '.', starting "
                        "with a letter or digit")
    info = task.info
    _check_same_kind(Path(base_path) / name, info.kind if info else None)
    store = CheckpointStore(run_dir)
    model = store.load_model("best")
    signatures = task.serving_signatures(model, config, run_dir)
    metadata = {"task": task.name, "kind": info.kind if info else None,
                "preset_of": info.preset_of if info else None, "model_name": name,
                "run_dir": str(Path(run_dir).resolve()),
                "epoch": (store.state() or {}).get("best_epoch"),
                **task.export_metadata(config, run_dir)}
    assets = {PROVENANCE_FILE: json.dumps(metadata, indent=2, ensure_ascii=False).encode()}
    requests = task.warmup_requests()
    if requests:
        assets[WARMUP_FILE] = warmup_file(requests)
    return export_saved_model(model, signatures, base_path, name,
                              assets_extra=assets, method_names=task.signature_methods())


def _check_same_kind(folder: Path, kind: str | None) -> None:
    """Refuse to add a version of another kind of model to a served name.

    A server retires the older version when a new one loads: a classifier exported under a
    language model's name would silently replace it for every client of that name.

    Args:
        folder: the served model's folder, `<base path>/<name>`.
        kind: this export's kind (`classify`, `language_model`, ...).
    """
    if kind is None or not (numbers := existing_versions(folder)):
        return
    number = numbers[-1]
    latest = next(p for p in folder.iterdir() if version_number(p.name) == number)
    served = export_provenance(latest)  # None: not exported by rnnkit, nothing to compare
    if isinstance(served, dict) and served.get("kind") not in (None, kind):
        raise UserError(f"{folder} holds a {served['kind']} export (version {number}); this "
                        f"run is {kind}",
                        "pass --model-name with another name, or another --base-path")
