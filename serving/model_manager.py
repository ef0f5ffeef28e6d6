"""Which model versions are loaded: base paths, version policies, labels, polling and reloads.

Each model has a base path whose numeric subdirectories are its versions. The version policy
(latest N, all, or specific versions) picks the versions that should be served; the manager loads
those (warming each up before it becomes AVAILABLE) and retires the others only once an aspired
version is AVAILABLE, so a request never finds the model without a version in between, and a
version that fails to load leaves the previous one serving while status reports the failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.export import version_number
from serving.servable import Servable, load_servable
from serving.status import Code, ServingError, invalid_argument

log = logging.getLogger("serving.model_manager")

State = get_model_status_pb2.ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = (
    State.START, State.LOADING, State.AVAILABLE, State.UNLOADING, State.END)
SUPPORTED_PLATFORMS = ("", "tensorflow")


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One version's state as GetModelStatus reports it.

    Args:
        version: the version number.
        state: a ModelVersionStatus.State value (START, LOADING, AVAILABLE, UNLOADING, END).
        error: why loading failed, or None.
    """

    version: int
    state: int
    error: ServingError | None = None


@dataclasses.dataclass(eq=False)
class _Version:
    version: int
    path: Path
    state: int = START
    error: ServingError | None = None
    servable: Servable | None = None
    fingerprint: tuple[int, ...] = ()


@dataclasses.dataclass(eq=False)
class _Model:
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, _Version] = dataclasses.field(default_factory=dict)
    labels: dict[str, int] = dataclasses.field(default_factory=dict)
    aspired: set[int] = dataclasses.field(default_factory=set)
    scan_problem: str = ""

    @property
    def name(self) -> str:
        return self.config.name


def _fingerprint(path: Path) -> tuple[int, ...]:
    """Modification times that change when a version directory is rewritten."""
    stamps = []
    for item in (path, path / "saved_model.pb", path / "variables"):
        with contextlib.suppress(OSError):
            stamps.append(item.stat().st_mtime_ns)
    return tuple(stamps)


def scan_versions(base_path: Path) -> dict[int, Path] | None:
    """Find the version directories (numeric names) under a base path; None if it is missing.

    Args:
        base_path: the model's base path.
    """
    try:
        children = list(base_path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return None
    return {number: child for child in children
            if (number := version_number(child.name)) is not None and child.is_dir()}


def _scan_problem(base_path: Path, found: dict[int, Path] | None,
                  policy: model_server_config_pb2.FileSystemStoragePathSourceConfig
                  .ServableVersionPolicy) -> str:
    """Why a scan finds nothing (or not what the policy names) to serve; '' when fine."""
    if found is None:
        return f"base path {base_path} does not exist"
    if not found:
        problem = f"no version directories (numeric names like 1/) under {base_path}"
        if version_number(base_path.name) is not None and (base_path / "saved_model.pb").is_file():
            problem += (f"; it is itself version {base_path.name} of a model: give the folder "
                        f"above it, {base_path.parent}")
        return problem
    missing = sorted(set(policy.specific.versions) - set(found))
    if policy.WhichOneof("policy_choice") == "specific" and missing:
        return f"specific versions {missing} not found under {base_path}"
    return ""


def aspired_versions(policy: model_server_config_pb2.FileSystemStoragePathSourceConfig
                     .ServableVersionPolicy, on_disk: set[int]) -> set[int]:
    """Apply a version policy to the versions found on disk.

    Args:
        policy: latest N (the default, N=1), all, or specific versions.
        on_disk: the version numbers found under the base path.
    """
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(on_disk)
    if choice == "specific":
        return set(policy.specific.versions) & on_disk
    count = policy.latest.num_versions if choice == "latest" else 0
    return set(sorted(on_disk, reverse=True)[:max(count, 1)])


def validate_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """Reject a ModelServerConfig the manager cannot serve, as TF Serving does.

    Args:
        config: the whole server config.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise invalid_argument(
            "ServerModelConfig type not supported: only model_config_list is supported")
    names = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise invalid_argument("a model_config_list entry has no name")
        if model.name in names:
            raise invalid_argument(f"Illegal to list model {model.name} multiple times in "
                                   "config list")
        names.add(model.name)
        if model.model_platform not in SUPPORTED_PLATFORMS:
            raise invalid_argument(f"Model {model.name} requests unsupported platform "
                                   f"{model.model_platform}; only 'tensorflow' is supported")
        if not model.base_path or not Path(model.base_path).is_absolute():
            raise invalid_argument(f"Expected model {model.name} to have an absolute path; got "
                                   f"base_path()={model.base_path}")


def _freeze_live_objects(unfreeze: bool = False) -> None:
    """Collect garbage once, then leave every object alive now out of later collections.

    A loaded model is hundreds of thousands of Python objects (the translator: 420k). Each full
    collection during serving scanned them all holding the GIL (0.15 s), so /healthz waited
    behind them; frozen, a full collection scans only what requests made since
    (docs/reliability.md). Unloading unfreezes first so that the old version's cycles go.

    Args:
        unfreeze: put frozen objects back under collection before collecting.
    """
    if unfreeze:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


def _load_error(err: Exception) -> ServingError:
    if isinstance(err, ServingError):
        return err
    code = getattr(err, "error_code", None)  # tf.errors.OpError carries its status code
    message = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
    return ServingError(Code(code) if code else Code.UNKNOWN, message)


class ModelManager:
    """Loads, serves and retires model versions; thread-safe.

    Args:
        poll_wait_seconds: seconds between scans of the base paths; 0 or less scans only when
            a config is applied.
        warmup: runs a new version's warmup requests before it becomes AVAILABLE; raising
            fails the load.
        metrics: receives `observe_load(model, version, ok)`; None for no metrics.
        load_threads: versions loaded at the same time (--num_load_threads; 0 means 1).
        unload_threads: versions unloaded at the same time (--num_unload_threads; 0 means 1).
        unload_grace_seconds: how long a retired version waits for its in-flight requests.
        max_load_retries: a failed load is tried again this many times (--max_num_load_retries);
            the version stays LOADING meanwhile.
        load_retry_interval_seconds: the wait between tries (--load_retry_interval_micros).
        saved_model_tags: the MetaGraph tag set to load (--saved_model_tags).
        allow_unavailable_labels: a new label may name a version that is not AVAILABLE yet
            (--allow_version_labels_for_unavailable_models); moving a label still needs one.
    """

    def __init__(self, *, poll_wait_seconds: float = 1.0,
                 warmup: Callable[[Servable], None] | None = None, metrics: Any = None,
                 load_threads: int = 2, unload_threads: int = 2,
                 unload_grace_seconds: float = 30.0, max_load_retries: int = 0,
                 load_retry_interval_seconds: float = 60.0,
                 saved_model_tags: tuple[str, ...] = ("serve",),
                 allow_unavailable_labels: bool = False) -> None:
        self._poll_wait = poll_wait_seconds
        self._warmup = warmup
        self._metrics = metrics
        self._unload_grace = unload_grace_seconds
        self._max_load_retries = max(0, max_load_retries)
        self._retry_interval = max(0.0, load_retry_interval_seconds)
        self._tags = saved_model_tags
        self._allow_unavailable_labels = allow_unavailable_labels
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._poll_lock = threading.Lock()
        self._config_lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._loader = ThreadPoolExecutor(max(1, load_threads), thread_name_prefix="serving-load")
        self._unloader = ThreadPoolExecutor(max(1, unload_threads),
                                            thread_name_prefix="serving-unload")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ---- configuration ------------------------------------------------------------------

    def apply_config(self, config: model_server_config_pb2.ModelServerConfig,
                     timeout: float | None = None,
                     stop: threading.Event | None = None) -> None:
        """Serve exactly the models of `config`; waits until their loads finished.

        Models missing from `config` are retired; new models are loaded; existing ones take the
        new version policy and labels. Labels may only name AVAILABLE versions.

        Args:
            config: a ModelServerConfig with a model_config_list.
            timeout: the longest wait for loads in seconds; None waits as long as they take.
            stop: set (by a signal) to stop waiting, e.g. through a broken version's retries.
        """
        validate_config(config)
        with self._config_lock:
            self._apply(list(config.model_config_list.config), timeout, stop)

    def _apply(self, configs: list[model_server_config_pb2.ModelConfig],
               timeout: float | None, stop: threading.Event | None = None) -> None:
        with self._lock:
            wanted = {model.name for model in configs}
            for name in list(self._models):
                if name not in wanted:
                    log.info("removing model %s", name)
                    self._remove(self._models[name])
            for model_config in configs:
                model = self._models.get(model_config.name)
                if model is not None and model.config.base_path != model_config.base_path:
                    self._remove(model)
                    model = None
                if model is None:
                    log.info("adding model %s from %s", model_config.name, model_config.base_path)
                    self._models[model_config.name] = _Model(config=model_config)
                else:
                    model.config = model_config
        self.poll()
        self.wait_settled(timeout, stop)
        if stop is None or not stop.is_set():
            self._apply_labels(configs)

    def _apply_labels(self, configs: list[model_server_config_pb2.ModelConfig]) -> None:
        problems = []
        with self._lock:
            for model_config in configs:
                model = self._models.get(model_config.name)
                if model is None:
                    continue
                labels = dict(model_config.version_labels)
                bad = [(label, version) for label, version in sorted(labels.items())
                       if getattr(model.versions.get(version), "state", None) != AVAILABLE
                       and not (self._allow_unavailable_labels and label not in model.labels)]
                if bad:
                    problems += [f"Request to assign label {label} to version {version} of model "
                                 f"{model.name}, which is not currently available for inference"
                                 for label, version in bad]
                else:
                    model.labels = labels
        if problems:
            raise ServingError(Code.FAILED_PRECONDITION, "; ".join(problems))

    def _remove(self, model: _Model) -> None:
        del self._models[model.name]
        for slot in model.versions.values():
            if slot.state == AVAILABLE:
                self._retire(model, slot)

    # ---- polling and loading --------------------------------------------------------------

    def start_polling(self) -> None:
        """Start the background thread that rescans base paths every poll interval."""
        if self._poll_wait <= 0 or self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="serving-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_wait):
            self.poll()

    def poll(self) -> None:
        """Scan every model's base path once: load new aspired versions, retire old ones."""
        with self._poll_lock:
            with self._lock:
                models = list(self._models.values())
            for model in models:
                try:
                    self._poll_model(model)
                except Exception:  # a poller that dies would stop all future updates
                    log.exception("polling model %s failed", model.name)

    def _poll_model(self, model: _Model) -> None:
        base_path = Path(model.config.base_path)
        found = scan_versions(base_path)
        on_disk = found or {}
        fingerprints = {version: _fingerprint(path) for version, path in on_disk.items()}
        with self._lock:
            if self._models.get(model.name) is not model:
                return
            policy = model.config.model_version_policy
            aspired = aspired_versions(policy, set(on_disk))
            problem = _scan_problem(base_path, found, policy)
            if problem and problem != model.scan_problem:
                log.warning("model %s: %s", model.name, problem)
            model.scan_problem = problem
            model.aspired = aspired
            for version in sorted(aspired):
                slot = model.versions.get(version)
                retry = (slot is not None and slot.state == END and
                         (slot.error is None or slot.fingerprint != fingerprints[version]))
                if slot is None or retry:
                    slot = _Version(version=version, path=on_disk[version])
                    model.versions[version] = slot
                    self._changed.notify_all()
                    self._loader.submit(self._load, model, slot)
            self._retire_unaspired(model)

    def _load(self, model: _Model, slot: _Version) -> None:
        with self._lock:
            if self._models.get(model.name) is not model or self._stop.is_set():
                slot.state = END
                self._changed.notify_all()
                return
            slot.state = LOADING
            self._changed.notify_all()
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                servable = self._load_once(model, slot)
                break
            except Exception as err:
                error = _load_error(err)
                self._observe_load(model.name, slot, ok=False)
                retry = attempt < self._max_load_retries
                log.error("loading %s version %d from %s failed: %s%s", model.name, slot.version,
                          slot.path, error.message,
                          f"; retrying in {self._retry_interval:g} s ({attempt + 1} of "
                          f"{self._max_load_retries} retries)" if retry else "")
                attempt += 1
                # A retry waits on the stop event so that shutting down is not delayed.
                if retry and not self._stop.wait(self._retry_interval):
                    continue
                with self._lock:
                    slot.state, slot.error = END, error
                    slot.fingerprint = _fingerprint(slot.path)
                    self._changed.notify_all()
                return
        with self._lock:
            if self._models.get(model.name) is not model or self._stop.is_set():
                servable.close()
                slot.state = END
                self._changed.notify_all()
                return
            slot.servable, slot.state, slot.error = servable, AVAILABLE, None
            self._changed.notify_all()
            self._retire_unaspired(model)
        self._observe_load(model.name, slot, ok=True, seconds=time.perf_counter() - started)

    def _load_once(self, model: _Model, slot: _Version) -> Servable:
        """Load and warm up one version; the servable is closed again if warmup fails."""
        servable = load_servable(model.name, slot.version, slot.path, self._tags)
        if self._warmup is not None:
            try:
                self._warmup(servable)
            except BaseException:
                servable.close()
                raise
        _freeze_live_objects()
        return servable

    def _observe_load(self, name: str, slot: _Version, ok: bool,
                      seconds: float | None = None) -> None:
        if self._metrics is not None:
            self._metrics.observe_load(name, slot.version, ok, model_path=str(slot.path),
                                       latency_seconds=seconds)

    def _retire_unaspired(self, model: _Model) -> None:
        """Retire AVAILABLE versions the policy no longer wants, once a wanted one is up."""
        aspired_up = any(getattr(model.versions.get(version), "state", None) == AVAILABLE
                         for version in model.aspired)
        if model.aspired and not aspired_up:
            return  # keep the old version serving until a new one is AVAILABLE
        for slot in model.versions.values():
            if slot.state == AVAILABLE and slot.version not in model.aspired:
                self._retire(model, slot)

    def _retire(self, model: _Model, slot: _Version) -> None:
        log.info("retiring %s version %d", model.name, slot.version)
        servable, slot.servable, slot.state = slot.servable, None, UNLOADING
        self._changed.notify_all()
        self._unloader.submit(self._unload, slot, servable)

    def _unload(self, slot: _Version, servable: Servable) -> None:
        if servable.wait_idle(self._unload_grace):
            servable.close()
        elif not self._stop.is_set():
            log.warning("%r still had requests after %.0f s; closing it anyway", servable,
                        self._unload_grace)
            servable.close()
        del servable
        _freeze_live_objects(unfreeze=True)  # the closed version's cycles become collectable
        # When the server stops, a version still running an abandoned request is left to the
        # process exit rather than closed under that request.
        with self._lock:
            slot.state = END
            self._changed.notify_all()

    def wait_settled(self, timeout: float | None = None,
                     stop: threading.Event | None = None) -> bool:
        """Wait until no version is starting or loading; False if `timeout` passed (or `stop`
        was set) first.

        Args:
            timeout: the longest wait in seconds; None waits as long as loads take.
            stop: an event that ends the wait when set (checked every half second).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while any(slot.state in (START, LOADING)
                      for model in self._models.values() for slot in model.versions.values()):
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or (stop is not None and stop.is_set()):
                    return False
                if stop is not None:
                    left = 0.5 if left is None else min(left, 0.5)
                self._changed.wait(left)
        return True

    def stop(self) -> None:
        """Stop polling and loading, and close every loaded version.

        Versions do not wait for requests still running: the protocol servers' shutdown
        grace period is over by then.
        """
        self._stop.set()
        self._unload_grace = 0.0
        if self._poller is not None:
            self._poller.join()
        self._loader.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for model in list(self._models.values()):
                self._remove(model)
        self._unloader.shutdown(wait=True)

    # ---- queries ----------------------------------------------------------------------------

    def _label_version(self, name: str, label: str) -> int:
        model = self._models.get(name)
        if model is None or label not in model.labels:
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        return model.labels[label]

    def _resolve(self, name: str, version: int | None, label: str | None) -> Servable:
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        if label is not None:
            version = self._label_version(name, label)
        model = self._models.get(name)
        available = {} if model is None else {
            slot.version: slot.servable for slot in model.versions.values()
            if slot.state == AVAILABLE}
        if version is None:
            if available:
                return available[max(available)]
            request = f"Latest({name})"
        else:
            if version in available:
                return available[version]
            request = f"Specific({name}, {version})"
        if model is None:
            hint = f"no model named '{name}' is served"
        elif available:
            hint = f"available versions: {', '.join(map(str, sorted(available)))}"
        else:
            hint = "no version of it is available"
        raise ServingError(Code.NOT_FOUND, f"Servable not found for request: {request} ({hint})")

    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None = None,
                label: str | None = None) -> Iterator[Servable]:
        """Hold the servable a request names; it stays open until the block ends.

        Args:
            name: the model's name.
            version: a specific version, or None.
            label: a version label, or None (not both with `version`).
        """
        with self._lock:
            servable = self._resolve(name, version, label)
            servable.retain()
        try:
            yield servable
        finally:
            servable.release()

    def status(self, name: str, version: int | None = None,
               label: str | None = None) -> list[VersionStatus]:
        """The state of a model's versions, newest first, as GetModelStatus reports it.

        Args:
            name: the model's name.
            version: only this version, or None for all.
            label: only the version this label names, or None.
        """
        with self._lock:
            if label is not None:
                version = self._label_version(name, label)
            model = self._models.get(name)
            slots = {} if model is None else dict(model.versions)
            if not slots:
                raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
            if version is not None:
                if version not in slots:
                    raise ServingError(Code.NOT_FOUND,
                                       f"Could not find version {version} of model {name}")
                slots = {version: slots[version]}
            return [VersionStatus(slot.version, slot.state, slot.error)
                    for _, slot in sorted(slots.items(), reverse=True)]

    def model_names(self) -> list[str]:
        """The names of the configured models, sorted."""
        with self._lock:
            return sorted(self._models)

    def failed(self) -> dict[str, str]:
        """The configured models with no AVAILABLE version because their loads failed."""
        with self._lock:
            return {name: "; ".join(f"version {slot.version}: {slot.error.message}"
                                    for slot in model.versions.values() if slot.error)
                    for name, model in sorted(self._models.items())
                    if not any(slot.state == AVAILABLE for slot in model.versions.values())
                    and any(slot.error for slot in model.versions.values())}

    def not_ready(self) -> dict[str, str]:
        """The configured models with no AVAILABLE version, each with the reason."""
        problems = {}
        with self._lock:
            for name, model in sorted(self._models.items()):
                slots = model.versions.values()
                if any(slot.state == AVAILABLE for slot in slots):
                    continue
                errors = [f"version {slot.version}: {slot.error.message}"
                          for slot in slots if slot.error is not None]
                loading = [str(slot.version) for slot in slots if slot.state in (START, LOADING)]
                problems[name] = ("; ".join(errors) or
                                  (f"loading version {', '.join(loading)}" if loading else "") or
                                  model.scan_problem or "no version loaded")
        return problems
