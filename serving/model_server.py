"""The model server process: configuration, both protocol servers, reloads and clean shutdown."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from tensorflow_serving.config import model_server_config_pb2

from serving.admission import Admission
from serving.batching import BatchScheduler
from serving.config_readers import (
    load_batching_parameters,
    load_model_server_config,
    load_monitoring_config,
    load_session_config,
    load_ssl_config,
)
from serving.core import ServingCore
from serving.errors import UserError
from serving.grpc_api import (
    create_grpc_server,
    default_grpc_threads,
    parse_channel_arguments,
    server_credentials,
)
from serving.http_server import ssl_context
from serving.metrics import Metrics
from serving.model_manager import ModelManager
from serving.rest_api import RestServer, check_monitoring_path
from serving.servable import set_parallelism
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
        grpc_max_threads: gRPC worker threads; 0 for 4 per CPU, raised to fill batches.
        shutdown_grace_seconds: how long in-flight requests may finish after SIGTERM.
        rest_api_num_threads: REST requests processed at once; 0 for 4 per CPU, raised to
            fill batches.
        rest_api_enable_cors_support: TF's CORS headers and preflight answers on REST.
        rest_api_ssl_config_file: text-format SSLConfig for HTTPS on the REST port.
        grpc_socket_path: also serve gRPC on this UNIX socket.
        grpc_channel_arguments: comma-separated KEY=VALUE gRPC server arguments.
        ssl_config_file: text-format SSLConfig for TLS (mutual with client_verify) on gRPC.
        saved_model_tags: comma-separated MetaGraph tag set to load.
        num_load_threads: versions loaded at once (0 means 1).
        num_unload_threads: versions unloaded at once (0 means 1).
        max_num_load_retries: retries of a failed load.
        load_retry_interval_micros: wait between load retries.
        allow_version_labels_for_unavailable_models: new labels may name versions not loaded.
        enable_signature_method_name_check: Classify/Regress need classify/regress signatures.
        num_request_iterations_for_warmup: times each warmup request is replayed.
        tensorflow_session_parallelism: both TF thread pools' size unless set one by one.
        tensorflow_intra_op_parallelism: threads one op may use; 0 lets TF choose.
        tensorflow_inter_op_parallelism: ops running at once; 0 lets TF choose.
        tensorflow_session_config_file: text-format ConfigProto giving the two sizes.
        max_concurrent_runs_per_model: requests of one model running at once; 0 for no limit
            (admission control, serving.admission; off with enable_batching).
        max_queued_runs_per_model: requests of one model waiting; beyond, UNAVAILABLE.
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
    rest_api_num_threads: int = 0
    rest_api_enable_cors_support: bool = False
    rest_api_ssl_config_file: str | None = None
    grpc_socket_path: str = ""
    grpc_channel_arguments: str = ""
    ssl_config_file: str | None = None
    saved_model_tags: str = "serve"
    num_load_threads: int = 0
    num_unload_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    enable_signature_method_name_check: bool = False
    num_request_iterations_for_warmup: int = 1
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    tensorflow_session_config_file: str | None = None
    max_concurrent_runs_per_model: int = 2 * (os.cpu_count() or 1)
    max_queued_runs_per_model: int = 128


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
    if options.model_config_file:
        if options.model_base_path:  # as in TF Serving (and its image's entrypoint)
            log.info("--model_config_file %s is used; --model_name and --model_base_path are "
                     "ignored", options.model_config_file)
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
        path = Path(model.base_path)
        # A missing base path is waited for (TF's behaviour) when the server polls for it.
        waits = not path.exists() and options.file_system_poll_wait_seconds > 0
        if not path.is_dir() and not waits:
            raise UserError(f"model {model.name!r}: base path {model.base_path} is not a folder",
                            "point it at the folder holding the numbered version folders "
                            "(e.g. exports/NAME, which contains 1/saved_model.pb)")
    return config


def thread_pool_sizes(options: ServerOptions) -> tuple[int, int]:
    """TensorFlow's (intra-op, inter-op) pool sizes from the flags, as TF Serving derives them.

    The per-pool flags win, then --tensorflow_session_parallelism for both, then the session
    config file's values; 0 lets TensorFlow choose.

    Args:
        options: the server options.
    """
    intra = inter = 0
    if options.tensorflow_session_config_file:
        config = load_session_config(options.tensorflow_session_config_file)
        intra, inter = config.intra_op_parallelism_threads, config.inter_op_parallelism_threads
    if options.tensorflow_session_parallelism > 0:
        intra = inter = options.tensorflow_session_parallelism
    return (options.tensorflow_intra_op_parallelism or intra,
            options.tensorflow_inter_op_parallelism or inter)


class ModelServer:
    """Both protocol servers over one core, with model and config polling.

    Args:
        options: the server options.
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.config = model_server_config(options)
        monitoring = load_monitoring_config(options.monitoring_config_file)
        if monitoring.enable:
            check_monitoring_path(monitoring.path, options.monitoring_config_file)
        self.metrics = Metrics()
        batcher = None
        # TF Serving refuses to start with a batching file but batching off.
        if options.batching_parameters_file and not options.enable_batching:
            raise UserError(f"--batching_parameters_file {options.batching_parameters_file} "
                            "was given without --enable_batching",
                            "add --enable_batching, or drop --batching_parameters_file")
        if options.enable_batching:
            params = load_batching_parameters(options.batching_parameters_file or None)
            if params.unused_fields:
                log.warning("batching parameters %s have no effect here (one priority level, "
                            "one padding policy)", ", ".join(params.unused_fields))
            batcher = BatchScheduler(params, self.metrics)
        self.ssl = load_ssl_config(options.ssl_config_file) if options.ssl_config_file else None
        self.rest_ssl = (load_ssl_config(options.rest_api_ssl_config_file)
                         if options.rest_api_ssl_config_file else None)
        try:
            self.channel_arguments = parse_channel_arguments(options.grpc_channel_arguments)
        except ValueError as err:
            raise UserError(str(err), "write --grpc_channel_arguments=KEY=VALUE,KEY=VALUE "
                                      "(e.g. grpc.max_connection_age_ms=2000)") from None
        self.thread_pools = thread_pool_sizes(options)
        retry = options.load_retry_interval_micros
        self.manager = ModelManager(
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            warmup=self._warmup if options.enable_model_warmup else None,
            metrics=self.metrics, load_threads=options.num_load_threads,
            unload_threads=options.num_unload_threads,
            max_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=max(0, retry) / 1e6,
            saved_model_tags=tuple(tag.strip() for tag in options.saved_model_tags.split(",")
                                   if tag.strip()),
            allow_unavailable_labels=options.allow_version_labels_for_unavailable_models)
        # With batching, TF's batching queue is the bound (a per-model limit would keep
        # batches from filling).
        admission = (Admission(options.max_concurrent_runs_per_model,
                               options.max_queued_runs_per_model)
                     if batcher is None and options.max_concurrent_runs_per_model > 0 else None)
        self.core = ServingCore(self.manager, batcher, self.metrics,
                                check_method_name=options.enable_signature_method_name_check,
                                admission=admission)
        self.rest: RestServer | None = None
        self.grpc: Any = None
        self.health: Any = None
        self._monitoring_path = monitoring.path if monitoring.enable else None
        self._stop = threading.Event()
        self._config_poller: threading.Thread | None = None

    def _warmup(self, servable: Any) -> None:
        run_warmup(self.core, servable, self.options.num_request_iterations_for_warmup)

    def _wait_for_base_paths(self, stop: threading.Event | None) -> bool:
        """Poll until every model's base path exists (TF waits for them); False if stopped."""
        told: set[str] = set()
        interval = self.options.file_system_poll_wait_seconds
        while True:
            missing = {model.name: model.base_path
                       for model in self.config.model_config_list.config
                       if not Path(model.base_path).is_dir()}
            if not missing:
                return True
            for name, path in missing.items():
                if name not in told:
                    log.warning("model %s: base path %s does not exist yet; waiting for it "
                                "(looking every %g s, --file_system_poll_wait_seconds)", name,
                                path, interval)
                    told.add(name)
            if stop is not None and stop.wait(interval):
                return False
            if stop is None:
                time.sleep(interval)

    def start(self, stop: threading.Event | None = None) -> bool:
        """Load every model (failing if one cannot serve), then open the ports.

        Args:
            stop: set (by a signal) to give up waiting for a missing base path or for
                versions to load.

        Returns:
            False when `stop` was set before the models could load.
        """
        intra, inter = self.thread_pools
        if intra or inter:
            try:
                set_parallelism(intra, inter)
                log.info("TensorFlow thread pools: intra-op %s, inter-op %s", intra or "auto",
                         inter or "auto")
            except RuntimeError as err:  # TF ran an op before (another server in this process)
                log.warning("cannot size TensorFlow's thread pools: %s", err)
        if not self._wait_for_base_paths(stop):
            return False
        try:
            self.manager.apply_config(self.config, stop=stop)
        except ServingError as err:
            raise UserError(f"cannot apply the model config: {err.message}",
                            "fix the config" + (" (labels must name versions that load)"
                                                if "label" in err.message else "")) from None
        if stop is not None and stop.is_set():  # a signal while a version loads or retries
            self.manager.stop()
            return False
        failed = self.manager.failed()
        if failed:
            self.manager.stop()
            raise UserError("model(s) failed to load: " +
                            "; ".join(f"{name}: {why}" for name, why in failed.items()),
                            "fix or remove the broken version folders")
        options = self.options
        rest_port = options.rest_api_port
        if rest_port and rest_port == options.port:  # TF Serving logs this and goes on
            log.error("--rest_api_port cannot be same as --port (%d); skipped the REST API: give "
                      "it its own port", rest_port)
            rest_port = 0
        try:
            if options.port or options.grpc_socket_path:
                self.grpc, self.health = create_grpc_server(
                    self.core, options.host, options.port, self._grpc_threads(),
                    channel_arguments=self.channel_arguments,
                    socket_path=options.grpc_socket_path,
                    credentials=server_credentials(self.ssl) if self.ssl else None)
            if rest_port:
                tls = (ssl_context(self.rest_ssl.server_key, self.rest_ssl.server_cert,
                                   self.rest_ssl.custom_ca, self.rest_ssl.client_verify)
                       if self.rest_ssl else None)
                self.rest = RestServer(
                    self.core, options.host, rest_port,
                    timeout_ms=options.rest_api_timeout_in_ms,
                    max_body_bytes=options.rest_api_max_body_bytes,
                    monitoring_path=self._monitoring_path,
                    num_threads=self._rest_threads(),
                    cors=options.rest_api_enable_cors_support, ssl_context=tls)
        except OSError as err:
            self.manager.stop()
            if self.grpc is not None:
                self.grpc.stop(0)
            raise UserError(f"cannot listen on {options.host}: {err}",
                            "choose free ports with --port and --rest_api_port") from None
        except ssl.SSLError as err:
            self.manager.stop()
            raise UserError(f"the REST SSL config cannot be used: {err}",
                            "check that server_key and server_cert are a matching PEM key "
                            "and certificate") from None
        if self.grpc is not None:
            self.grpc.start()
        if self.rest is not None:
            self.rest.start()
        self.manager.start_polling()
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            self._config_poller = threading.Thread(target=self._poll_config, daemon=True,
                                                   name="serving-config-poll")
            self._config_poller.start()
        grpc_where = [f"{options.host}:{options.port}"] if options.port else []
        grpc_where += [f"unix:{options.grpc_socket_path}"] if options.grpc_socket_path else []
        log.info("serving %s; gRPC %s%s, REST %s", ", ".join(self.manager.model_names()),
                 f"on {' and '.join(grpc_where)}" if self.grpc else "off",
                 " (TLS)" if self.ssl else "", f"on {self.rest.url}" if self.rest else "off")
        return True

    def _grpc_threads(self) -> int:
        """RPC threads: --grpc_max_threads, else the default, raised to fill batches."""
        return self._request_threads(self.options.grpc_max_threads, default_grpc_threads())

    def _rest_threads(self) -> int:
        """REST worker threads: --rest_api_num_threads, else 4 per CPU, raised to fill batches."""
        return self._request_threads(self.options.rest_api_num_threads,
                                     4 * (os.cpu_count() or 1))

    def _request_threads(self, requested: int, default: int) -> int:
        """Threads of a protocol's request pool: `requested` if set, else enough to fill batches.

        A request holds its thread while it waits in a batch, so with fewer threads than
        max_batch_size per batch thread no batch could ever fill (capped at 256 threads): with
        TF's 4 per CPU, 32 REST clients on 2 CPUs made batches of at most 8.

        Args:
            requested: the protocol's thread flag; 0 when not given.
            default: the pool size without batching.
        """
        if requested:
            return requested
        if self.core.batcher is not None:
            params = self.core.batcher.params
            return max(default, min(256, params.max_batch_size * params.num_batch_threads))
        return default

    def _poll_config(self) -> None:
        path = self.options.model_config_file
        assert path is not None
        reported = ""  # a file that stays broken is logged once, not every poll
        while not self._stop.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                config = load_model_server_config(path)
                _absolute_base_paths(config, Path(path).resolve().parent)
                reported = ""
                if config == self.config:
                    continue
                log.info("model config file %s changed; reloading", path)
                self.config = config
                self.core.reload_config(config)
            except (UserError, ServingError) as err:
                if str(err) != reported:
                    log.error("reloading %s failed: %s (the models loaded before keep "
                              "serving)", path, err)
                    reported = str(err)

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
        if not server.start(stop):
            return 0
        while not stop.wait(1.0):
            pass
        server.stop()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
