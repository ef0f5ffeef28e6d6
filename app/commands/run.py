"""`rnnkit run`: the main job: every task's data, model, evaluation and export; then serve them."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from app.errors import DataUnavailable, UserError

log = logging.getLogger("app.commands.run")

HELP = ("prepare the data, train (or reuse) every task's model, evaluate, export, then serve "
        "them with the web app")
EXAMPLES = """examples:
  rnnkit run                       # what `make run` does: all tasks, then serve until Ctrl-C
  rnnkit run --no-serve            # stop after the summary
  rnnkit run --tasks sentiment translation
  rnnkit run --retrain             # train new runs even where finished ones exist
  rnnkit run --base-path /srv/models --port 9500 --rest-port 9501 --app-port 9080
A finished run of the same profile is reused, and so are its evaluation and export. A task whose
data set cannot be prepared (no mirror, no internet) is skipped with the reason. The tasks, their
order and their headline metrics come from the task registry (pipelines/tasks.py).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    from pipelines.tasks import run_order, task_names

    parser.add_argument("--profile", default="quick", metavar="NAME",
                        help="training profile of every task (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", default=run_order(), choices=task_names(),
                        metavar="TASK",
                        help=f"tasks to run (default: all of {', '.join(run_order())})")
    parser.add_argument("--retrain", action="store_true",
                        help="train new runs even where finished ones exist")
    parser.add_argument("--base-path", type=Path, default=Path("exports"), metavar="DIR",
                        help="the exports folder (default: %(default)s)")
    parser.add_argument("--no-serve", action="store_true",
                        help="print the summary and stop instead of serving")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the model server and web app listen on "
                             "(default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=8500,
                        help="the model server's gRPC port (default: %(default)s)")
    parser.add_argument("--rest-port", type=int, default=8501,
                        help="the model server's REST port (default: %(default)s)")
    parser.add_argument("--app-port", type=int, default=8080,
                        help="the web app's port (default: %(default)s)")


def _reusable_run(task: Any, profile: str) -> Path | None:
    """The newest finished, non-diverged run of the task trained with the profile's config."""
    from pipelines.run_dir import list_runs, load_config

    wanted = task.config(profile)
    for item in reversed(list_runs(task.name)):
        metrics = item["metrics"] or {}
        if not item["finished"] or metrics.get("terminated_on_nan"):
            continue
        run_dir = Path(item["run_dir"])
        if load_config(run_dir, task.config_class) == wanted:
            return run_dir
    return None


def _exported_version(task: Any, run_dir: Path, base_path: Path) -> Path | None:
    """The newest exported version of the task's model that came from this run, if any."""
    from serving.export import existing_versions, export_provenance

    model_dir = base_path / task.export_name
    for version in reversed(existing_versions(model_dir)):
        provenance = export_provenance(model_dir / str(version)) or {}
        if provenance.get("run_dir") == str(run_dir.resolve()):
            return model_dir / str(version)
    return None


def plan(names: list[str]) -> list[str]:
    """The tasks to run, each once, in the order given, checked to run on named data.

    Args:
        names: task names as given to --tasks.
    """
    from pipelines.tasks import task_info

    chosen = list(dict.fromkeys(names))
    for name in chosen:
        if task_info(name).dataset is None:
            raise UserError(f"task {name} trains on the data you give it, so `rnnkit run` "
                            "cannot run it", f"train it yourself: rnnkit train {name} --data FILE")
    return chosen


def run_task(name: str, profile: str, retrain: bool, base_path: Path) -> dict[str, Any]:
    """Data, training (or a finished run reused), evaluation and export of one task.

    Args:
        name: the task.
        profile: the training profile.
        retrain: train a new run even if a finished one with the same config exists.
        base_path: the exports folder.

    Returns:
        The task's summary: run dir, whether it trained now, its headline metrics, the export.
    """
    from pipelines.datasets import dataset_names, prepare_dataset
    from pipelines.evaluation import evaluate_run
    from pipelines.run_dir import EVALUATION_FILE, read_json
    from pipelines.tasks import get_task
    from pipelines.trainer import train
    from serving.export import export_run

    task = get_task(name)
    # Named data sets without a TFDS builder are read straight from RNNKIT_DATA_DIR.
    if task.info.dataset in dataset_names():
        data = prepare_dataset(task.info.dataset)
        log.info("%s: data ready: %s", name, data["splits"])

    run_dir = None if retrain else _reusable_run(task, profile)
    trained = run_dir is None
    if trained:
        result = train(task, task.config(profile))
        if result.terminated_on_nan:
            raise UserError(f"training of {result.run_dir} diverged (NaN loss)",
                            "run `rnnkit run --retrain`; if it repeats, report it")
        run_dir = result.run_dir
    else:
        log.info("%s: reusing finished run %s (--retrain trains a new one)", name, run_dir)

    evaluation = None if trained else read_json(run_dir / EVALUATION_FILE)
    if evaluation is None:
        evaluation = evaluate_run(task, run_dir)
    export = None if trained else _exported_version(task, run_dir, base_path)
    if export is None:
        export = export_run(task, run_dir, base_path)
    return {
        "task": name,
        "model": task.export_name,
        "run_dir": str(run_dir),
        "trained_now": trained,
        "test": {key: evaluation.get(key) for key in task.info.headline},
        "export": str(export),
    }


def _summary_lines(results: list[dict[str, Any]], skipped: dict[str, str]) -> list[str]:
    """One line per task: its model, headline test metrics and run dir; then the skipped ones."""
    lines = []
    for item in results:
        metrics = ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in item["test"].items())
        how = "trained now" if item["trained_now"] else "reused"
        lines.append(f"  {item['task']:<14} {item['model']:<14} {metrics}  ({how}: "
                     f"{item['run_dir']})")
    lines += [f"  {name:<14} skipped: {why}" for name, why in skipped.items()]
    return lines


def _serve(args: argparse.Namespace) -> None:
    """Serve every exported model and the web app until Ctrl-C or SIGTERM.

    Args:
        args: the parsed command line (base path, host and ports).
    """
    from app.web.server import make_server
    from pipelines.config import runs_dir
    from serving.model_server import ModelServer, ServerOptions
    from serving.models_config import write_models_config

    base_path = args.base_path.resolve()
    config_file = write_models_config(base_path, container_base=str(base_path))
    server = ModelServer(ServerOptions(
        host=args.host, port=args.port, rest_api_port=args.rest_port,
        model_config_file=str(config_file), model_config_file_poll_wait_seconds=60))
    server.start()
    try:
        web = make_server(f"{args.host}:{args.port}", args.host, args.app_port, runs_dir(),
                          base_path=base_path)
    except BaseException:
        server.stop()
        raise
    web_thread = threading.Thread(target=web.serve_forever, daemon=True, name="web-app")
    web_thread.start()
    print(f"\nweb app       {web.url}\n"
          f"REST          http://{args.host}:{args.rest_port}/v1/models\n"
          f"gRPC          {args.host}:{args.port}\n"
          "Ctrl-C stops both.", flush=True)

    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set())
                for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        log.info("stopping the web app and the model server")
        web.shutdown()
        web.server_close()
        server.stop()


def run(args: argparse.Namespace) -> int:
    """Run every task end to end, print the summary, then serve (unless --no-serve).

    Args:
        args: the parsed command line.
    """
    results, skipped = [], {}
    for name in plan(args.tasks):
        try:
            results.append(run_task(name, args.profile, args.retrain, args.base_path))
        except DataUnavailable as err:
            log.warning("%s skipped: %s", name, err)
            skipped[name] = str(err)
    if not results:
        raise UserError("no task could run: " + "; ".join(skipped.values()),
                        "put the data sets into RNNKIT_DATA_DIR (see README) or connect to the "
                        "internet")
    print(json.dumps({"tasks": results, "skipped": skipped}, indent=2), flush=True)
    print("\n".join(["", "summary (test split):", *_summary_lines(results, skipped)]),
          flush=True)
    if not args.no_serve:
        _serve(args)
    return 0
