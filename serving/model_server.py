"""The model server process: configuration, both protocol servers, reloads and clean shutdown."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tensorflow_serving.config import model_server_config_pb2

from app.errors import UserError
from serving.batching import BatchScheduler
from serving.config_files import (
    load_batching_parameters,
    load_model_server_config,
    load_monitoring_config,
)
from serving.grpc_api import create_grpc_server, default_grpc_threads
from serving.metrics import Metrics
from serving.model_manager import ModelManager
from serving.rest_api import RestServer
from serving.server import ServingCore
from serving.status import ServingError
from serving.warmup import run_warmup

log = logging.getLogger("serving.model_server")


@dataclasses.dataclass
class ServerOptions:
    """How to run the model server; the names are tensorflow_model_server's flags.

    Args:
        host: the address both servers bind.
        port: the gRPC port; 0 turns gRPC off.
        rest_api_port: the HTTP/REST port; 0 turns REST off.
        model_name: the model's name when serving one model from `model_base_path`.
        model_base_path: the folder holding the model's numbered version folders.
        model_config_file: a text-format ModelServerConfig listing the models instead.
        model_config_file_poll_wait_seconds: re-read the config file this often; 0 never.
        file_system_poll_wait_seconds: look for new versions this often; 0 only at start.
        enable_batching: merge concurrent requests into batches.
        batching_parameters_file: text-format BatchingParameters (used with enable_batching).
        monitoring_config_file: text-format MonitoringConfig (Prometheus page).
        rest_api_timeout_in_ms: REST requests running longer get 504; 0 for no limit.
        rest_api_max_body_bytes: REST bodies larger than this get 413.
        enable_model_warmup: replay assets.extra/tf_serving_warmup_requests before serving.
        grpc_max_threads: gRPC worker threads; 0 for 4 per CPU.
        shutdown_grace_seconds: how long in-flight requests may finish after SIGTERM.
    """

    host: str = "127.0.0.1"
    port: int = 8500
    rest_api_port: int = 8501
    model_name: str = "default"
    model_base_path: str | None = None
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0
    file_system_poll_wait_seconds: float = 1
    enable_batching: bool = False
    batching_parameters_file: str | None = None
    monitoring_config_file: str | None = None
    rest_api_timeout_in_ms: int = 30000
    rest_api_max_body_bytes: int = 64 << 20
    enable_model_warmup: bool = True
    grpc_max_threads: int = 0
    shutdown_grace_seconds: float = 10.0


def _absolute_base_paths(config: model_server_config_pb2.ModelServerConfig,
                         relative_to: Path) -> None:
    for model in config.model_config_list.config:
        path = Path(model.base_path).expanduser()
        model.base_path = str((relative_to / path).resolve() if not path.is_absolute() else path)


def model_server_config(options: ServerOptions) -> model_server_config_pb2.ModelServerConfig:
    """The models to serve: from --model_config_file, or one from --model_base_path.

    Args:
        options: the server options.
    """
    if options.model_config_file and options.model_base_path:
        raise UserError("both --model_config_file and --model_base_path were given",
                        "list every model in the config file, or serve one with "
                        "--model_name/--model_base_path")
    if options.model_config_file:
        config = load_model_server_config(options.model_config_file)
        _absolute_base_paths(config, Path(options.model_config_file).resolve().parent)
    elif options.model_base_path:
        config = model_server_config_pb2.ModelServerConfig()
        model = config.model_config_list.config.add(name=options.model_name,
                                                    model_platform="tensorflow")
        model.base_path = options.model_base_path
        _absolute_base_paths(config, Path.cwd())
    else:
        raise UserError("no model to serve",
                        "give --model_base_path (with --model_name) or --model_config_file")
    for model in config.model_config_list.config:
        if not Path(model.base_path).is_dir():
            raise UserError(f"model {model.name!r}: base path {model.base_path} is not a folder",
                            "point it at the folder holding the numbered version folders "
                            "(e.g. exports/NAME, which contains 1/saved_model.pb)")
    return config


class ModelServer:
    """Both protocol servers over one core, with model and config polling.

    Args:
        options: the server options.
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.config = model_server_config(options)
        monitoring = load_monitoring_config(options.monitoring_config_file)
        self.metrics = Metrics()
        batcher = None
        # As in TF Serving, a batching file alone does not turn batching on; say so, since
        # giving one suggests batching was wanted.
        if options.batching_parameters_file and not options.enable_batching:
            log.warning("--batching_parameters_file %s is ignored without --enable_batching",
                        options.batching_parameters_file)
        if options.enable_batching:
            batcher = BatchScheduler(load_batching_parameters(options.batching_parameters_file),
                                     self.metrics)
        self.manager = ModelManager(
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            warmup=self._warmup if options.enable_model_warmup else None,
            metrics=self.metrics)
        self.core = ServingCore(self.manager, batcher, self.metrics)
        self.rest: RestServer | None = None
        self.grpc: Any = None
        self.health: Any = None
        self._monitoring_path = monitoring.path if monitoring.enable else None
        self._stop = threading.Event()
        self._config_poller: threading.Thread | None = None

    def _warmup(self, servable: Any) -> None:
        run_warmup(self.core, servable)

    def start(self) -> None:
        """Load every model (failing if one cannot serve), then open the ports."""
        try:
            self.manager.apply_config(self.config)
        except ServingError as err:
            raise UserError(f"cannot apply the model config: {err.message}",
                            "fix the config (labels must name versions that load)") from None
        failed = self.manager.failed()
        if failed:
            self.manager.stop()
            raise UserError("model(s) failed to load: " +
                            "; ".join(f"{name}: {why}" for name, why in failed.items()),
                            "fix or remove the broken version folders")
        options = self.options
        try:
            if options.port:
                self.grpc, self.health = create_grpc_server(
                    self.core, options.host, options.port, self._grpc_threads())
            if options.rest_api_port:
                self.rest = RestServer(self.core, options.host, options.rest_api_port,
                                       timeout_ms=options.rest_api_timeout_in_ms,
                                       max_body_bytes=options.rest_api_max_body_bytes,
                                       monitoring_path=self._monitoring_path)
        except OSError as err:
            self.manager.stop()
            raise UserError(f"cannot listen on {options.host}: {err}",
                            "choose free ports with --port and --rest_api_port") from None
        if self.grpc is not None:
            self.grpc.start()
        if self.rest is not None:
            self.rest.start()
        self.manager.start_polling()
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._config_poller = threading.Thread(target=self._poll_config, daemon=True,
                                                   name="serving-config-poll")
            self._config_poller.start()
        log.info("serving %s; gRPC %s, REST %s", ", ".join(self.manager.model_names()),
                 f"on {options.host}:{options.port}" if self.grpc else "off",
                 f"on http://{options.host}:{options.rest_api_port}" if self.rest else "off")

    def _grpc_threads(self) -> int:
        """RPC threads: --grpc_max_threads, else the default, raised to fill batches.

        A Predict call holds its thread while it waits in a batch, so with fewer threads than
        max_batch_size per batch thread no batch could ever fill (capped at 256 threads).
        """
        if self.options.grpc_max_threads:
            return self.options.grpc_max_threads
        threads = default_grpc_threads()
        if self.core.batcher is not None:
            params = self.core.batcher.params
            threads = max(threads, min(256, params.max_batch_size * params.num_batch_threads))
        return threads

    def _poll_config(self) -> None:
        path = self.options.model_config_file
        assert path is not None
        while not self._stop.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                config = load_model_server_config(path)
                _absolute_base_paths(config, Path(path).resolve().parent)
                if config == self.config:
                    continue
                log.info("model config file %s changed; reloading", path)
                self.config = config
                self.core.reload_config(config)
            except (UserError, ServingError) as err:
                log.error("reloading %s failed: %s", path, err)

    def stop(self) -> None:
        """Stop accepting requests, let in-flight ones finish (within the grace), unload."""
        grace = self.options.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        self._stop.set()
        if self.health is not None:
            self.health.shutdown()
        grpc_stopped = self.grpc.stop(grace) if self.grpc is not None else None
        if self.rest is not None and not self.rest.stop(grace):
            log.warning("REST requests still running after %.0f s; stopping anyway", grace)
        if grpc_stopped is not None:
            grpc_stopped.wait(grace + 1)
        if self.core.batcher is not None:  # a batch still running is past the grace too
            self.core.batcher.close(timeout=max(0.0, deadline - time.monotonic()))
        self.manager.stop()
        log.info("model server stopped")


def serve(options: ServerOptions) -> int:
    """Run the model server until SIGTERM or SIGINT; returns the exit code.

    Args:
        options: the server options.
    """
    stop = threading.Event()

    def on_signal(number: int, _frame: Any) -> None:
        log.info("received %s; shutting down", signal.Signals(number).name)
        stop.set()

    previous = {number: signal.signal(number, on_signal)
                for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = ModelServer(options)
        server.start()
        while not stop.wait(1.0):
            pass
        server.stop()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
