"""TF Serving's text-format config files: models, batching, monitoring, TLS, session config.

`tensorflow-serving-api` ships the ModelServerConfig proto but not BatchingParameters
(session_bundle_config.proto), MonitoringConfig (monitoring_config.proto) nor SSLConfig
(ssl_config.proto), so those message types are declared here at run time with the same package,
field names and field types, and every file is parsed by protobuf's own text_format parser:
syntax errors and unknown fields are reported as TF Serving reports them, with line and column.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from serving.errors import UserError

# TF Serving's defaults when a batching field is absent: BasicBatchScheduler::Options
# (max_batch_size 1000, batch_timeout_micros 0, max_enqueued_batches 10, num_batch_threads =
# port::MaxParallelism(), i.e. the CPU count) and the thread pool name model_server sets.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10
DEFAULT_THREAD_POOL_NAME = "model_server_batch_threads"
# PrometheusExporter::kPrometheusPath in TF Serving.
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def _default_num_batch_threads() -> int:
    return os.cpu_count() or 1


@dataclasses.dataclass
class BatchingParameters:
    """Batching settings, as TF Serving's `--batching_parameters_file` holds them.

    Args:
        max_batch_size: most examples (rows along axis 0) in one merged batch.
        batch_timeout_micros: how long the oldest request of a partial batch may wait for others.
        max_enqueued_batches: batches that may wait per queue before requests are refused.
        num_batch_threads: threads running merged batches in parallel.
        allowed_batch_sizes: if set, merged batches are padded up to the next of these sizes;
            increasing, and the last must equal max_batch_size.
        pad_variable_length_inputs: pad inputs whose non-batch dimensions differ (with zeros or
            empty strings) so that they can share a batch.
        thread_pool_name: name of the batch thread pool (a metrics label).
        enable_large_batch_splitting: requests may hold up to max_batch_size rows and are split
            into batches of at most max_execution_batch_size rows.
        max_execution_batch_size: most rows in one model run when splitting is on.
        unused_fields: fields of TF's proto that parse but mean nothing to our batcher (the
            low-priority queue, padding and scheduler policies), by name, for a log line.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = dataclasses.field(default_factory=_default_num_batch_threads)
    allowed_batch_sizes: list[int] = dataclasses.field(default_factory=list)
    pad_variable_length_inputs: bool = False
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    unused_fields: list[str] = dataclasses.field(default_factory=list)

    @property
    def execution_batch_size(self) -> int:
        """The most rows one model run takes: max_execution_batch_size when splitting."""
        if self.enable_large_batch_splitting:
            return min(self.max_execution_batch_size, self.max_batch_size)
        return self.max_batch_size

    def validate(self) -> None:
        """Raise ValueError naming the first setting TF Serving would refuse."""
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads",
                     "max_execution_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
                raise ValueError(
                    f"allowed_batch_sizes must be positive and increasing, got {sizes}")
            limit = self.execution_batch_size
            name = ("max_execution_batch_size" if self.enable_large_batch_splitting
                    else "max_batch_size")
            if sizes[-1] != limit:
                raise ValueError(
                    f"the last allowed_batch_sizes entry ({sizes[-1]}) must equal {name} "
                    f"({limit})")


@dataclasses.dataclass
class MonitoringConfig:
    """Prometheus monitoring settings, as TF Serving's `--monitoring_config_file` holds them.

    Args:
        enable: expose metrics on the REST port.
        path: the HTTP path of the metrics page.
    """

    enable: bool = False
    path: str = DEFAULT_PROMETHEUS_PATH


# BatchingParameters' wrapper-typed fields: (name, wrapper kind), as in TF Serving 2.21.
BATCHING_WRAPPED_FIELDS = (
    ("max_batch_size", "int"), ("batch_timeout_micros", "int"), ("max_enqueued_batches", "int"),
    ("num_batch_threads", "int"), ("thread_pool_name", "str"),
    ("enable_large_batch_splitting", "bool"), ("max_execution_batch_size", "int"),
    ("low_priority_max_batch_size", "int"), ("low_priority_batch_timeout_micros", "int"),
    ("low_priority_max_enqueued_batches", "int"),
)
# Fields that parse but have no meaning in our single-priority batcher.
UNUSED_BATCHING_FIELDS = (
    "low_priority_max_batch_size", "low_priority_batch_timeout_micros",
    "low_priority_max_enqueued_batches", "low_priority_allowed_batch_sizes",
    "mixed_priority_batching_policy", "batch_padding_policy")


def _build_message_classes() -> dict[str, Any]:
    """Declare BatchingParameters and MonitoringConfig as TF Serving's .proto files do."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="rnnkit/serving/tf_serving_config_files.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    F = descriptor_pb2.FieldDescriptorProto

    def add(message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int,
            type_name: str = "", repeated: bool = False) -> None:
        field = message.field.add(name=name, number=number, type=kind,
                                  label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
        if type_name:
            field.type_name = type_name

    # tensorflow_serving/servables/tensorflow/session_bundle_config.proto. Text format goes by
    # field names and types only, so the numbers here need not match TF's.
    batching = fdp.message_type.add(name="BatchingParameters")
    int64, string, boolean = (".google.protobuf.Int64Value", ".google.protobuf.StringValue",
                              ".google.protobuf.BoolValue")
    for number, (name, wrapper) in enumerate(BATCHING_WRAPPED_FIELDS, start=1):
        add(batching, name, number, F.TYPE_MESSAGE, {"int": int64, "str": string,
                                                     "bool": boolean}[wrapper])
    add(batching, "allowed_batch_sizes", 50, F.TYPE_INT64, repeated=True)
    add(batching, "low_priority_allowed_batch_sizes", 51, F.TYPE_INT64, repeated=True)
    add(batching, "pad_variable_length_inputs", 52, F.TYPE_BOOL)
    add(batching, "mixed_priority_batching_policy", 53, F.TYPE_STRING)
    add(batching, "batch_padding_policy", 54, F.TYPE_STRING)
    # tensorflow_serving/config/ssl_config.proto: PEM contents, not file names.
    ssl = fdp.message_type.add(name="SSLConfig")
    for number, name in enumerate(("server_key", "server_cert", "custom_ca"), start=1):
        add(ssl, name, number, F.TYPE_STRING)
    add(ssl, "client_verify", 4, F.TYPE_BOOL)
    # tensorflow_serving/config/monitoring_config.proto.
    prometheus = fdp.message_type.add(name="PrometheusConfig")
    add(prometheus, "enable", 1, F.TYPE_BOOL)
    add(prometheus, "path", 2, F.TYPE_STRING)
    monitoring = fdp.message_type.add(name="MonitoringConfig")
    add(monitoring, "prometheus_config", 1, F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(
        f"tensorflow.serving.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig", "SSLConfig")}


_MESSAGES = _build_message_classes()


def _parse_file(path: str | os.PathLike, message: Any, what: str) -> Any:
    """Parse a text-format proto file into `message`, as UserError on any problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} file {file} does not exist",
                        "check the path given on the command line") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {what} file {file}: {err}",
                        "check the file's permissions and that it is UTF-8 text") from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        line, column = err.GetLine(), err.GetColumn()
        where = f"{file}:{line}:{column}" if line else str(file)
        # The message starts with "line:column : " already; keep only the description.
        detail = str(err).split(" : ", 1)[-1]
        raise UserError(
            f"{what} file {where}: {detail}",
            f"fix the text-format {message.DESCRIPTOR.full_name} in that file") from None
    return message


def load_model_server_config(path: str | os.PathLike) -> Any:
    """Read a `--model_config_file`: a text-format tensorflow.serving.ModelServerConfig.

    Only the syntax is checked here; what the config asks for is checked by
    serving.model_manager.validate_config, as TF Serving does when it applies a config.

    Args:
        path: the file.

    Returns:
        The parsed `model_server_config_pb2.ModelServerConfig`.
    """
    from tensorflow_serving.config import model_server_config_pb2

    return _parse_file(path, model_server_config_pb2.ModelServerConfig(), "model config")


def load_batching_parameters(path: str | os.PathLike | None) -> BatchingParameters:
    """Read a `--batching_parameters_file` (text-format BatchingParameters), or TF's defaults.

    Args:
        path: the file, or None for TF Serving's defaults.
    """
    if path is None:
        return BatchingParameters()
    proto = _parse_file(path, _MESSAGES["BatchingParameters"](), "batching parameters")
    params = BatchingParameters()
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads", "thread_pool_name", "enable_large_batch_splitting",
                 "max_execution_batch_size"):
        if proto.HasField(name):
            setattr(params, name, getattr(proto, name).value)
    params.allowed_batch_sizes = list(proto.allowed_batch_sizes)
    params.pad_variable_length_inputs = proto.pad_variable_length_inputs
    params.unused_fields = [field.name for field, _ in proto.ListFields()
                            if field.name in UNUSED_BATCHING_FIELDS]
    try:
        params.validate()
    except ValueError as err:
        raise UserError(f"batching parameters file {path}: {err}",
                        "fix that setting in the file") from None
    return params


def load_monitoring_config(path: str | os.PathLike | None) -> MonitoringConfig:
    """Read a `--monitoring_config_file` (text-format MonitoringConfig), or monitoring off.

    Args:
        path: the file, or None for no monitoring.
    """
    if path is None:
        return MonitoringConfig()
    proto = _parse_file(path, _MESSAGES["MonitoringConfig"](), "monitoring config")
    prometheus = proto.prometheus_config
    config = MonitoringConfig(enable=prometheus.enable,
                              path=prometheus.path or DEFAULT_PROMETHEUS_PATH)
    if not config.path.startswith("/"):
        raise UserError(f"monitoring config file {path}: path {config.path!r} must start with /",
                        f"use for example path: \"{DEFAULT_PROMETHEUS_PATH}\"")
    return config


@dataclasses.dataclass
class SSLConfig:
    """TLS settings, as TF Serving's `--ssl_config_file` (a text-format SSLConfig) holds them.

    Args:
        server_key: the server's private key, PEM.
        server_cert: the server's certificate (chain), PEM.
        custom_ca: CA certificates that sign client certificates, PEM; '' for none.
        client_verify: require and verify a client certificate (mutual TLS).
    """

    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


def load_ssl_config(path: str | os.PathLike) -> SSLConfig:
    """Read an `--ssl_config_file` (text-format tensorflow.serving.SSLConfig).

    Args:
        path: the file.
    """
    proto = _parse_file(path, _MESSAGES["SSLConfig"](), "SSL config")
    if not proto.server_key or not proto.server_cert:
        raise UserError(f"SSL config file {path}: server_key and server_cert are required",
                        "put the PEM text of the key and certificate in the file "
                        "(server_key: \"-----BEGIN PRIVATE KEY-----\\n...\")")
    if proto.client_verify and not proto.custom_ca:
        raise UserError(f"SSL config file {path}: client_verify needs custom_ca",
                        "add the PEM text of the CA that signs the client certificates")
    return SSLConfig(server_key=proto.server_key, server_cert=proto.server_cert,
                     custom_ca=proto.custom_ca, client_verify=proto.client_verify)


def load_session_config(path: str | os.PathLike) -> Any:
    """Read a `--tensorflow_session_config_file` (text-format tensorflow.ConfigProto).

    Args:
        path: the file.
    """
    from tensorflow.core.protobuf import config_pb2

    return _parse_file(path, config_pb2.ConfigProto(), "TensorFlow session config")
