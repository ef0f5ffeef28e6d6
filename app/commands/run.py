"""`rnnkit run`: the main job: serve the models and the web app at once, and meanwhile prepare,
train, evaluate and export every task in the background."""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from app.run_progress import Progress
from serving.errors import DataUnavailable, UserError

log = logging.getLogger("app.commands.run")

# How long Ctrl-C waits for the training to reach a point where it can stop.
STOP_WAIT_S = 60

HELP = ("serve the web app and the models at once while preparing, training (or reusing), "
        "exporting and evaluating every task's model")
EXAMPLES = """examples:
  rnnkit run                       # what `make run` does: serve now, train in the background
  rnnkit run --no-serve            # train everything, print the summary, stop
  rnnkit run --tasks sentiment translation
  rnnkit run --retrain             # train new runs even where finished ones exist
  rnnkit run --base-path /srv/models --port 9500 --rest-port 9501 --app-port 9080
A finished run of the same profile is reused, and so are its evaluation and export; an interrupted
one (Ctrl-C) resumes from its last epoch. A task whose data set cannot be prepared (no mirror, no
internet) is skipped with the reason; a task that fails is reported and the others go on. The web
page's Results tab and `rnnkit runs` show each task's progress. The tasks, their order and their
headline metrics come from the task registry (pipelines/tasks/__init__.py).
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
                        help="train every task in the foreground, print the summary and stop "
                             "(no servers)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the model server and web app listen on "
                             "(default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=8500,
                        help="the model server's gRPC port (default: %(default)s)")
    parser.add_argument("--rest-port", type=int, default=8501,
                        help="the model server's REST port (default: %(default)s)")
    parser.add_argument("--app-port", type=int, default=8080,
                        help="the web app's port (default: %(default)s)")


def _existing_run(task: Any, profile: str) -> tuple[Path | None, str]:
    """The task's newest run with the profile's config, and how far it got.

    Returns:
        (run dir, "finished") for a finished run that did not diverge, (run dir,
        "interrupted") for one stopped after a checkpoint (it resumes), (run dir, "started") for
        one stopped before its first checkpoint (it trains again in the same dir), or
        (None, "") when there is none.
    """
    from pipelines.training.run_dir import list_runs, load_config

    wanted = task.config(profile)
    for item in reversed(list_runs(task.name)):
        metrics = item["metrics"] or {}
        if metrics.get("terminated_on_nan") or item["problem"]:
            continue  # a damaged run is listed by `rnnkit runs`, never reused
        run_dir = Path(item["run_dir"])
        if load_config(run_dir, task.config_class) != wanted:
            continue
        if item["finished"]:
            return run_dir, "finished"
        return run_dir, "interrupted" if item["trained"] else "started"
    return None, ""


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


def run_task(name: str, profile: str, retrain: bool, base_path: Path,
             progress: Progress | None = None) -> dict[str, Any]:
    """Data, training (or a finished run reused, or an interrupted one resumed), export and
    evaluation of one task.

    Args:
        name: the task.
        profile: the training profile.
        retrain: train a new run even if a finished one with the same config exists.
        base_path: the exports folder.
        progress: where to report each step (the web page and `rnnkit runs` read it).

    Returns:
        The task's summary: run dir, whether it trained now, its headline metrics, the export.
    """
    from pipelines.datasets import dataset_names, prepare_dataset
    from pipelines.tasks import get_task
    from pipelines.training.evaluation import evaluate_run
    from pipelines.training.export import export_run
    from pipelines.training.run_dir import EVALUATION_FILE, METRICS_FILE, new_run_dir, read_json
    from pipelines.training.trainer import resume_config, train

    def report(state: str, **fields: Any) -> None:
        if progress is not None:
            progress.task(name, state, **fields)

    task = get_task(name)
    report("preparing")
    # Named data sets without a TFDS builder are read straight from RNNKIT_DATA_DIR.
    if task.info.dataset in dataset_names():
        data = prepare_dataset(task.info.dataset)
        log.info("%s: data ready: %s", name, data["splits"])

    run_dir, how = (None, "") if retrain else _existing_run(task, profile)
    trained = how != "finished"
    if trained:
        resume = how == "interrupted"
        config = resume_config(task, run_dir) if resume else task.config(profile)
        # The run dir exists before training starts, so its history can be followed live.
        run_dir = run_dir if run_dir is not None else new_run_dir(task.name)
        if resume:
            log.info("%s: resuming interrupted run %s", name, run_dir)
        report("training", run_dir=str(run_dir), epochs=config.epochs)
        result = train(task, config, run_dir, resume=resume)
        if result.terminated_on_nan:
            raise UserError(f"training of {result.run_dir} diverged (NaN loss)",
                            "run `rnnkit run --retrain`; if it repeats, report it")
        run_dir = result.run_dir
    else:
        log.info("%s: reusing finished run %s (--retrain trains a new one)", name, run_dir)
    assert run_dir is not None

    # Export before the test-split evaluation (the export needs none of it), so the model is
    # served while it is evaluated.
    export = None if trained else _exported_version(task, run_dir, base_path)
    if export is None:
        report("exporting", run_dir=str(run_dir))
        export = export_run(task, run_dir, base_path)
    evaluation = None if trained else read_json(run_dir / EVALUATION_FILE)
    if evaluation is None:
        report("evaluating", run_dir=str(run_dir), export=str(export))
        evaluation = evaluate_run(task, run_dir)
    summary = {
        "task": name,
        "model": task.export_name,
        "run_dir": str(run_dir),
        "trained_now": trained,
        "resumed": how == "interrupted" and trained,
        "test": {key: evaluation.get(key) for key in task.info.headline},
        "export": str(export),
    }
    wall = (read_json(run_dir / METRICS_FILE) or {}).get("train_wall_time_s")
    report("done", run_dir=str(run_dir), test=summary["test"], export=str(export),
           trained_now=trained, train_wall_time_s=wall)
    return summary


def _first_line(err: BaseException) -> str:
    """An error as one line: a UserError's own text, else its type and first line."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text if isinstance(err, UserError) else f"{type(err).__name__}: {text}".rstrip(": ")


def run_tasks(names: list[str], args: argparse.Namespace, progress: Progress | None = None
              ) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, str]]:
    """Run the tasks one after another; a task that fails or lacks data does not stop the rest.

    Args:
        names: the tasks, in order.
        args: the parsed command line (profile, retrain, base path).
        progress: where to report each step.

    Returns:
        The finished tasks' summaries, the skipped tasks' reasons, the failed tasks' errors.
    """
    results, skipped, failed = [], {}, {}
    for name in names:
        try:
            results.append(run_task(name, args.profile, args.retrain, args.base_path, progress))
        except DataUnavailable as err:
            log.warning("%s skipped: %s", name, err)
            skipped[name] = str(err)
            if progress is not None:
                progress.task(name, "skipped", error=skipped[name])
        except Exception as err:  # one task's failure must not stop the others
            if isinstance(err, UserError):
                log.error("%s failed: %s", name, err)
            else:
                log.exception("%s failed", name)
            failed[name] = _first_line(err)
            if progress is not None:
                progress.task(name, "failed", error=failed[name])
    return results, skipped, failed


def _summary_lines(results: list[dict[str, Any]], skipped: dict[str, str],
                   failed: dict[str, str]) -> list[str]:
    """One line per task: its model, headline test metrics and run dir; then the others."""
    lines = []
    for item in results:
        metrics = ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in item["test"].items())
        how = ("resumed" if item.get("resumed") else "trained now") if item["trained_now"] \
            else "reused"
        lines.append(f"  {item['task']:<14} {item['model']:<14} {metrics}  ({how}: "
                     f"{item['run_dir']})")
    lines += [f"  {name:<14} skipped: {why}" for name, why in skipped.items()]
    lines += [f"  {name:<14} FAILED: {why}" for name, why in failed.items()]
    return lines


def _print_summary(results: list[dict[str, Any]], skipped: dict[str, str],
                   failed: dict[str, str]) -> None:
    print(json.dumps({"tasks": results, "skipped": skipped, "failed": failed}, indent=2),
          flush=True)
    print("\n".join(["", "summary (test split):", *_summary_lines(results, skipped, failed)]),
          flush=True)


def _interrupt(thread: threading.Thread) -> None:
    """Raise KeyboardInterrupt in another thread, as Ctrl-C does in the main one.

    It is raised at the thread's next Python bytecode: between two training steps, or when a
    long TensorFlow call returns. Checkpoints and exports are written by atomic renames, so
    whatever it interrupts leaves finished files intact.
    """
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                   ctypes.py_object(KeyboardInterrupt))


def _tidy_exports(base_path: Path, planned: tuple[str, ...]) -> None:
    """After serving: drop the planned model folders nothing was exported into, and list only
    exported models in models.config (as `rnnkit run` wrote it before serving while training)."""
    from serving.models_config_writer import (
        MODELS_CONFIG_NAME,
        exported_models,
        write_models_config,
    )

    for name in planned:
        folder = base_path / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if exported_models(base_path):
        write_models_config(base_path, container_base=str(base_path))
    else:  # it listed only models that were never exported
        (base_path / MODELS_CONFIG_NAME).unlink(missing_ok=True)


def _serve_while_training(args: argparse.Namespace, names: list[str],
                          progress: Progress) -> int:
    """Serve the models and the web app at once, train the tasks in a background thread, and
    stop everything on Ctrl-C or SIGTERM.

    Every planned model is in the server's config from the start, its folder polled: each
    export is loaded the moment its version folder is renamed into place.

    Args:
        args: the parsed command line (base path, host and ports, profile).
        names: the tasks, in order.
        progress: the job's progress file.
    """
    from app.web.server import make_server
    from pipelines.config import runs_dir
    from pipelines.tasks import task_info
    from serving.model_server import ModelServer, ServerOptions
    from serving.models_config_writer import write_models_config

    base_path = args.base_path.resolve()
    planned = tuple(dict.fromkeys(task_info(name).export_name for name in names))
    for name in planned:
        (base_path / name).mkdir(parents=True, exist_ok=True)
    config_file = write_models_config(base_path, container_base=str(base_path), planned=planned)
    server = ModelServer(ServerOptions(
        host=args.host, port=args.port, rest_api_port=args.rest_port,
        model_config_file=str(config_file), model_config_file_poll_wait_seconds=60))
    web = None
    try:
        # The web app's socket listens before the model server answers, so whoever sees the
        # REST port up can open the page at once (connections wait in the listen backlog
        # until serve_forever starts).
        web = make_server(f"{args.host}:{args.port}", args.host, args.app_port, runs_dir(),
                          base_path=base_path)
        server.start()
    except BaseException:  # e.g. a port in use: nothing trained, nothing left behind
        if web is not None:
            web.server_close()
        progress.finish("interrupted")
        _tidy_exports(base_path, planned)
        raise
    web_thread = threading.Thread(target=web.serve_forever, daemon=True, name="web-app")
    web_thread.start()
    urls = {"app": web.url, "rest": f"http://{args.host}:{args.rest_port}/v1/models",
            "grpc": f"{args.host}:{args.port}"}
    progress.serving(urls)
    print(f"\nweb app       {web.url}   (training progress: {web.url}/results)\n"
          f"REST          {urls['rest']}\n"
          f"gRPC          {urls['grpc']}\n"
          f"Training {', '.join(names)} now; each model is served once exported. "
          "Ctrl-C stops everything (an interrupted run resumes next time).", flush=True)

    stop, done = threading.Event(), threading.Event()

    def job() -> None:
        try:
            _print_summary(*run_tasks(names, args, progress))
            progress.finish("finished")
            print("All tasks done; serving until Ctrl-C.", flush=True)
        except KeyboardInterrupt:
            progress.finish("interrupted")
        except BaseException:
            log.exception("the training job failed")
            progress.finish("interrupted")
        finally:
            done.set()

    worker = threading.Thread(target=job, daemon=True, name="rnnkit-run")
    previous = {number: signal.signal(number, lambda *_: stop.set())
                for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.start()
        while not stop.wait(0.5):
            pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if worker.is_alive():
            log.info("stopping the training (finished runs and exports stay as they are)")
            _interrupt(worker)
            if not done.wait(STOP_WAIT_S):
                log.warning("the training did not stop within %d s; leaving it", STOP_WAIT_S)
        log.info("stopping the web app and the model server")
        web.shutdown()
        web.server_close()
        server.stop()
        progress.serving(None)
        _tidy_exports(base_path, planned)
    return 0


def _check_places(args: argparse.Namespace, runs: Path) -> None:
    """The folders the job writes and the ports it serves on, checked before anything starts.

    Args:
        args: the parsed command line.
        runs: the runs folder (RNNKIT_RUNS_DIR).
    """
    for folder, where in ((runs, "the runs folder (RNNKIT_RUNS_DIR)"),
                          (args.base_path, "--base-path")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file of that name, a parent that is a file, no permission
            raise UserError(f"{where} {folder} cannot be a folder: {err.strerror}",
                            f"give {where.split(' (')[0]} a folder you can write to") from None
    if args.no_serve:
        return
    ports = {"--port": args.port, "--rest-port": args.rest_port, "--app-port": args.app_port}
    for flag, port in ports.items():
        if not 0 <= port <= 65535:
            raise UserError(f"{flag} {port} is not a TCP port", "give a port from 1 to 65535")
        same = [other for other, value in ports.items() if other != flag and value == port]
        if port and same:
            raise UserError(f"{flag} and {same[0]} are both {port}",
                            "give the model server's gRPC and REST ports and the web app's "
                            "port three different numbers")


def run(args: argparse.Namespace) -> int:
    """Serve at once and train every task in the background; or, with --no-serve, train every
    task, print the summary and stop.

    Args:
        args: the parsed command line.

    Returns:
        0, or 1 when --no-serve finished with a failed task.
    """
    from pipelines.config import runs_dir
    from pipelines.tasks import get_task, task_info

    names = plan(args.tasks)
    for name in names:  # an unknown profile is an error before anything starts
        get_task(name).config(args.profile)
    _check_places(args, runs_dir())
    progress = Progress(runs_dir(), {name: task_info(name).export_name for name in names},
                        args.profile)
    if not args.no_serve:
        return _serve_while_training(args, names, progress)
    try:
        results, skipped, failed = run_tasks(names, args, progress)
    except KeyboardInterrupt:
        progress.finish("interrupted")
        raise
    progress.finish("finished")
    if not results:
        raise UserError("no task could run: " + "; ".join([*skipped.values(), *failed.values()]),
                        "put the data sets into RNNKIT_DATA_DIR (see README) or connect to the "
                        "internet" if skipped else "see the log above")
    _print_summary(results, skipped, failed)
    return 1 if failed else 0
