"""TF Serving's text-format config files: model server config, batching and monitoring parameters.

`tensorflow-serving-api` ships the ModelServerConfig proto but not BatchingParameters
(session_bundle_config.proto) nor MonitoringConfig (monitoring_config.proto), so those two message
types are declared here at run time with the same package, field names and field types, and every
file is parsed by protobuf's own text_format parser: syntax errors and unknown fields are reported
as TF Serving reports them, with the line and column.
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

from app.errors import UserError

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
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = dataclasses.field(default_factory=_default_num_batch_threads)
    allowed_batch_sizes: list[int] = dataclasses.field(default_factory=list)
    pad_variable_length_inputs: bool = False
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME

    def validate(self) -> None:
        """Raise ValueError naming the first setting TF Serving would refuse."""
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
                raise ValueError(
                    f"allowed_batch_sizes must be positive and increasing, got {sizes}")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    f"the last allowed_batch_sizes entry ({sizes[-1]}) must equal max_batch_size "
                    f"({self.max_batch_size})")


@dataclasses.dataclass
class MonitoringConfig:
    """Prometheus monitoring settings, as TF Serving's `--monitoring_config_file` holds them.

    Args:
        enable: expose metrics on the REST port.
        path: the HTTP path of the metrics page.
    """

    enable: bool = False
    path: str = DEFAULT_PROMETHEUS_PATH


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

    # tensorflow_serving/servables/tensorflow/session_bundle_config.proto, fields 1-7.
    batching = fdp.message_type.add(name="BatchingParameters")
    for number, name in enumerate(
            ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
             "num_batch_threads"), start=1):
        add(batching, name, number, F.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    add(batching, "thread_pool_name", 5, F.TYPE_MESSAGE, ".google.protobuf.StringValue")
    add(batching, "allowed_batch_sizes", 6, F.TYPE_INT64, repeated=True)
    add(batching, "pad_variable_length_inputs", 7, F.TYPE_BOOL)
    # tensorflow_serving/config/monitoring_config.proto.
    prometheus = fdp.message_type.add(name="PrometheusConfig")
    add(prometheus, "enable", 1, F.TYPE_BOOL)
    add(prometheus, "path", 2, F.TYPE_STRING)
    monitoring = fdp.message_type.add(name="MonitoringConfig")
    add(monitoring, "prometheus_config", 1, F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(
        f"tensorflow.serving.{name}")) for name in ("BatchingParameters", "MonitoringConfig")}


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
                 "num_batch_threads", "thread_pool_name"):
        if proto.HasField(name):
            setattr(params, name, getattr(proto, name).value)
    params.allowed_batch_sizes = list(proto.allowed_batch_sizes)
    params.pad_variable_length_inputs = proto.pad_variable_length_inputs
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
