"""tf.distribute for the shared trainer: strategies, cluster roles, data sharding, writers.

`config.strategy` picks one of STRATEGIES:

- `default`: no distribution, one device.
- `mirrored`: synchronous data parallelism over the GPUs of one machine, or over its logical
  CPUs when it has no GPU (split the CPU with `virtual_cpus` before TensorFlow runs anything).
- `multi_worker`: MultiWorkerMirroredStrategy over the workers listed in the standard `TF_CONFIG`
  environment variable (one process per machine, the same command everywhere, `TF_CONFIG`
  different per process; see docs/distributed.md).

Every replica takes an equal slice of each global batch of `config.batch_size`: the trainer
distributes its datasets with DATA auto-sharding, so each worker runs the whole input pipeline
(same seed, same order) and keeps its own slices. Only the chief writes the run directory; every
other worker writes into a temporary copy that is deleted when training ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.training.run_dir import CHECKPOINTS_DIR, CONFIG_FILE, HISTORY_FILE
from serving.errors import UserError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from pipelines.config import TrainConfig

log = logging.getLogger("pipelines.training.distribute")

STRATEGIES = ("default", "mirrored", "multi_worker")
TF_CONFIG = "TF_CONFIG"
DOCS = "docs/distributed.md"
# Task types MultiWorkerMirroredStrategy trains on; `evaluator` and `ps` are other strategies'.
_TRAINING_TYPES = ("chief", "worker")

# The one strategy of this process: MultiWorkerMirroredStrategy configures TensorFlow's
# collective ops, which can happen once, before TensorFlow runs anything.
_created: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class ClusterRole:
    """This process's place in a multi-worker cluster, as TF_CONFIG describes it.

    Args:
        task_type: `chief` or `worker`.
        task_index: index among the processes of that type.
        num_workers: training processes in the cluster, the chief included.
        is_chief: whether this process writes checkpoints and logs: the `chief`, else worker 0.
    """

    task_type: str
    task_index: int
    num_workers: int
    is_chief: bool


def cluster_role(tf_config: str | None = None) -> ClusterRole:
    """Read and check TF_CONFIG; a clear UserError for anything MWMS would reject or hang on.

    Args:
        tf_config: the JSON text; None reads the TF_CONFIG environment variable.
    """
    text = os.environ.get(TF_CONFIG) if tf_config is None else tf_config
    fix = (f'set {TF_CONFIG} on every worker, e.g. {{"cluster": {{"worker": ["host0:12345", '
           f'"host1:12345"]}}, "task": {{"type": "worker", "index": 0}}}} (see {DOCS})')
    if not text or not text.strip():
        raise UserError(f"strategy multi_worker needs the {TF_CONFIG} environment variable", fix)
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{TF_CONFIG} is not valid JSON ({err})", fix) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict):
        raise UserError(f'{TF_CONFIG} has no "cluster" object', fix)
    cluster, task = spec["cluster"], spec.get("task")
    for kind, addresses in cluster.items():
        if kind not in (*_TRAINING_TYPES, "evaluator"):
            raise UserError(f'{TF_CONFIG} lists task type {kind!r}',
                            f"multi_worker trains on {list(_TRAINING_TYPES)} only; drop it")
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit()
                           for a in addresses)):
            raise UserError(f'{TF_CONFIG} cluster "{kind}" must be a non-empty list of '
                            f'"host:port" strings, got {addresses!r}', fix)
    if "worker" not in cluster and "chief" not in cluster:
        raise UserError(f'{TF_CONFIG} cluster lists no "worker"', fix)
    if len(cluster.get("chief", [])) > 1:
        raise UserError(f"{TF_CONFIG} lists {len(cluster['chief'])} chiefs",
                        'list at most one "chief" address')
    if not isinstance(task, dict) or task.get("type") not in _TRAINING_TYPES:
        raise UserError(f'{TF_CONFIG} "task" must name this process\'s type, "worker" or '
                        f'"chief", got {task!r}', fix)
    kind, index = task["type"], task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster.get(kind, [])):
        raise UserError(f'{TF_CONFIG} task index {index!r} is not one of the '
                        f'{len(cluster.get(kind, []))} "{kind}" addresses',
                        "give each process its own index, 0 to N-1, in the same cluster list")
    has_chief = "chief" in cluster
    return ClusterRole(task_type=kind, task_index=index,
                       num_workers=len(cluster.get("worker", [])) + len(cluster.get("chief", [])),
                       is_chief=kind == "chief" or (not has_chief and index == 0))


def virtual_cpus(count: int) -> None:
    """Split the CPU into `count` logical devices, so `mirrored` has replicas without GPUs.

    TensorFlow fixes its devices when it first runs anything, so call this at program start.

    Args:
        count: logical CPU devices, at least 1.
    """
    import tensorflow as tf

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        raise UserError("TensorFlow's devices are already initialised; cannot split the CPU",
                        "split it before building any dataset, model or tensor") from None


def strategy_for(config: TrainConfig) -> tf.distribute.Strategy:
    """The strategy named by `config.strategy`, created once per process.

    Args:
        config: the run's config; `strategy` is one of STRATEGIES.
    """
    import tensorflow as tf

    name = config.strategy
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}", f"use --strategy with one of {STRATEGIES}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name in _created:
        return _created[name]
    if _created:
        raise UserError(f"this process already trains with strategy {next(iter(_created))!r}",
                        f"start a new process to train with {name!r}")
    strategy = (_mirrored() if name == "mirrored"
                else _multi_worker(config.join_timeout_minutes))
    _created[name] = strategy
    return strategy


def _mirrored() -> tf.distribute.Strategy:
    """MirroredStrategy over every GPU, else over every logical CPU."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if len(devices) == 1:
        log.warning("strategy mirrored has one device (%s): it trains like default; split the "
                    "CPU with pipelines.training.distribute.virtual_cpus(N) at program start "
                    "for more", devices[0].name)
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    log.info("mirrored strategy over %d devices: %s", len(devices),
             ", ".join(d.name for d in devices))
    return strategy


def _multi_worker(join_timeout_minutes: float) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy from TF_CONFIG, checked first for clear errors.

    Args:
        join_timeout_minutes: how long to wait for every worker to join before giving up.
    """
    role = cluster_role()
    log.info("multi-worker: %s %d of %d workers (%s); waiting for every worker to join",
             role.task_type, role.task_index, role.num_workers,
             "chief" if role.is_chief else "not chief")
    try:
        with _signals_end_the_process(), _joined_within(join_timeout_minutes, role):
            strategy = _keras_multi_worker_strategy()()
    except (RuntimeError, ValueError) as err:
        raise UserError(f"cannot start strategy multi_worker: {err}",
                        "create it first thing in the process (before any TensorFlow work) "
                        f"and check {TF_CONFIG}") from None
    log.info("multi-worker strategy ready: %d replicas in sync", strategy.num_replicas_in_sync)
    return strategy


# The join watchdog: a child process, since TensorFlow's wait holds the interpreter (no
# Python thread of this process runs while it waits). argv: parent pid, seconds, message.
_WATCHDOG = """
import os, signal, sys, time
parent, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
    if os.getppid() != parent:
        sys.exit(0)
sys.stderr.write(message + chr(10))
sys.stderr.flush()
os.kill(parent, signal.SIGKILL)
"""


@contextlib.contextmanager
def _joined_within(minutes: float, role: ClusterRole) -> Iterator[None]:
    """End the process with one error line if not every worker joined within `minutes`.

    TensorFlow's wait has no timeout and holds the interpreter in C++, so neither a Python
    thread nor a signal handler of this process runs during it: a small watchdog process
    prints the error and kills this one (SIGKILL: TensorFlow catches SIGTERM there). Nothing
    is written before the strategy exists, so nothing is lost.
    """
    message = (f"rnnkit: error: not every worker of the {role.num_workers} in {TF_CONFIG}'s "
               f"cluster joined within {minutes:g} minutes — start each one with the same "
               f"{TF_CONFIG} cluster and check that they reach each other's addresses, or wait "
               "longer with --set join_timeout_minutes=...")
    seconds = min(minutes * 60, 10 * 365 * 86400.0)  # an infinite timeout: ten years
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()),
                                 repr(seconds), message], stdin=subprocess.DEVNULL)
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()


@contextlib.contextmanager
def _signals_end_the_process() -> Iterator[None]:
    """Ctrl-C (and SIGTERM, until TensorFlow installs its own handler) ends the process at
    once inside the block, where nothing is written yet.

    The strategy waits inside TensorFlow's C++ for every worker to join, with no timeout, and
    Python's handlers only run between Python bytecodes: a missing peer left a worker that
    only `kill -9` stopped. The kernel's default action ends the process whatever it is doing.
    TensorFlow's multi-worker setup catches SIGTERM itself during that wait (its preemption
    notice), so a SIGTERM there still waits for the SIGKILL after a grace period.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_DFL)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@functools.cache
def _keras_multi_worker_strategy() -> type:
    """MultiWorkerMirroredStrategy that takes Keras 3's per-step logs (defined on first use)."""
    import tensorflow as tf

    class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """MWMS whose `reduce` accepts scalars with a batch axis, as Keras 3 (3.15) passes them.

        Keras averages every step's logs with `reduce("MEAN", log, axis=0)` under MWMS, and a
        scalar has no axis 0 (tensorflow/tensorflow#72388): a scalar is reduced over replicas.
        """

        def reduce(self, reduce_op: Any, value: Any, axis: int | None) -> Any:
            local = self.experimental_local_results(value)
            if axis is not None and all(getattr(v, "shape", None) is not None
                                        and v.shape.rank == 0 for v in local):
                axis = None
            return super().reduce(reduce_op, value, axis)

    return KerasMultiWorkerStrategy


def check_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """The per-replica batch of a global batch, which must split evenly over the replicas.

    Args:
        batch_size: the global batch size (`config.batch_size`).
        strategy: the run's strategy.
    """
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UserError(f"batch_size={batch_size} does not split evenly over {replicas} "
                        "replicas", f"use a multiple of {replicas}, e.g. --set "
                        f"batch_size={max(replicas, batch_size - batch_size % replicas)}")
    if replicas > 1:
        log.info("global batch %d = %d replicas x %d", batch_size, replicas,
                 batch_size // replicas)
    return batch_size // replicas


def shard_by_data(data: tf.data.Dataset) -> tf.data.Dataset:
    """Mark a batched dataset for DATA auto-sharding across workers.

    Each worker then runs the whole pipeline (in-memory caches, generators, seeded shuffles and
    length buckets cannot be split by file) and keeps its replicas' slices of every global
    batch; FILE sharding would give workers different reviews than a single process trains on.

    Args:
        data: a batched dataset the trainer hands to `fit`.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def in_cluster(strategy: tf.distribute.Strategy) -> bool:
    """Whether the strategy trains across several worker processes.

    Args:
        strategy: the run's strategy.
    """
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: always, except non-chief MWMS workers.

    Args:
        strategy: the run's strategy.
    """
    return not in_cluster(strategy) or bool(strategy.extended.should_checkpoint)


@contextlib.contextmanager
def writable_run_dir(strategy: tf.distribute.Strategy, run_dir: Path | None,
                     resume: bool) -> Iterator[Path | None]:
    """The run directory this process writes: the real one on the chief, a deleted copy elsewhere.

    MultiWorkerMirroredStrategy needs every worker to run the same callbacks (saving included),
    but only the chief's files may land in the run directory; the others save into a temporary
    folder, seeded from the chief's run on `resume`, and removed on exit. On leaving, the workers
    wait for each other, so when `train` returns on any of them the chief's files are complete.

    Args:
        strategy: the run's strategy.
        run_dir: the run directory as given; multi-worker runs need one, the same on every worker.
        resume: whether the run continues from the run directory's last checkpoint.
    """
    if not in_cluster(strategy):
        yield run_dir
        return
    if run_dir is None:
        raise UserError("multi-worker training needs an explicit run directory",
                        "pass the same --run-dir to every worker (on storage they all mount, "
                        "to --resume)")
    if is_chief(strategy):
        yield run_dir
        _wait_for_all(strategy)
        return
    scratch = Path(tempfile.mkdtemp(prefix="rnnkit-worker-"))
    try:
        own = scratch / "run"
        if resume:
            _copy_run_state(Path(run_dir), own)
        log.info("not the chief: writing to %s (deleted after training)", own)
        yield own
        _wait_for_all(strategy)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_for_all(strategy: tf.distribute.Strategy) -> None:
    """Block until every worker gets here: one all-reduce across the cluster."""
    import tensorflow as tf

    strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.constant(1.0)))


def _copy_run_state(run_dir: Path, dest: Path) -> None:
    """Copy what resuming reads (config, history, checkpoints) from the chief's run directory."""
    if not (run_dir / CHECKPOINTS_DIR).is_dir():
        raise UserError(f"this worker cannot read the checkpoints of {run_dir} to resume",
                        "put --run-dir on storage every worker mounts (NFS, a shared volume)")
    dest.mkdir(parents=True)
    shutil.copytree(run_dir / CHECKPOINTS_DIR, dest / CHECKPOINTS_DIR)
    for name in (CONFIG_FILE, HISTORY_FILE):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)


def prepare_fit(model: keras.Model, data: tf.data.Dataset) -> None:
    """Let Keras 3 build a model compiled under a strategy from `data`'s spec, not from a batch.

    Keras (3.15) builds such a model from the first batch of `fit` or `evaluate` after
    averaging that batch over the replicas, which fails for string inputs such as raw review
    text (`AddN` has no string kernel). Only shapes and dtypes are needed; the spec has them.

    Args:
        model: the compiled model, created in the strategy's scope.
        data: the training dataset (validation batches have the same spec).
    """
    if model.distribute_strategy.num_replicas_in_sync == 1:
        return
    spec = data.element_spec
    symbolic_build = type(model)._maybe_symbolic_build

    def from_spec(iterator: Any = None, data_batch: Any = None) -> None:
        symbolic_build(model, data_batch=spec if data_batch is None else data_batch)

    model._maybe_symbolic_build = from_spec
