"""tensorflow_model_server's command line: every flag of TF Serving 2.21's main.cc, parsed as TF.

Each TF flag is listed with its type, TF's default and what it does here: "implemented" (TF's
meaning), or "no effect" (GPU, TPU, TFLite, XLA, profiler and the like: accepted and logged once,
so a manifest written for the official image starts unchanged). Our own flags come after them.

Parsing follows TF's `tensorflow::Flags::Parse`: `--name=value`; a bool alone (`--name`) is true,
and `--name=true|false` sets it. We also take `--name value` (and `--name true|false` for bools),
and TF's unknown arguments are reported ("unknown argument: ...") without stopping the server.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

from serving.errors import UserError

IMPLEMENTED, NO_EFFECT, OURS = "implemented", "no effect", "ours"
_CPUS = os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag.

    Args:
        name: the flag's name without dashes.
        kind: bool, int, float or str.
        default: the value when the flag is not given.
        effect: IMPLEMENTED (TF's meaning), NO_EFFECT (accepted and logged) or OURS (not TF's).
        help: one line of what it does here.
    """

    name: str
    kind: type
    default: Any
    effect: str
    help: str


def _tf(name: str, kind: type, default: Any, effect: str, help: str) -> Flag:
    return Flag(name, kind, default, effect, help)


# In main.cc's order. Defaults are TF's (server.h), except rest_api_port (TF: 0, off; the official
# image passes 8501, which we take as the default), and grpc_max_threads and rest_api_num_threads
# (TF: 4 per CPU; here 0, which means that, raised so that batches can fill: model_server).
TF_FLAGS: tuple[Flag, ...] = (
    _tf("port", int, 8500, IMPLEMENTED, "gRPC TCP port; 0 turns the TCP port off"),
    _tf("grpc_socket_path", str, "", IMPLEMENTED, "also serve gRPC on this UNIX socket"),
    _tf("rest_api_port", int, 8501, IMPLEMENTED, "HTTP/REST port; 0 turns REST off"),
    _tf("rest_api_num_threads", int, 0, IMPLEMENTED,
        "REST requests processed at the same time (TF: threads); 0: 4 per CPU, raised to "
        "fill batches"),
    _tf("rest_api_timeout_in_ms", int, 30000, IMPLEMENTED,
        "REST requests running longer get HTTP 504; 0 for no limit"),
    _tf("rest_api_enable_cors_support", bool, False, IMPLEMENTED,
        "answer CORS preflights and add Access-Control-Allow-Origin: * (TF's headers)"),
    _tf("enable_batching", bool, False, IMPLEMENTED, "merge concurrent requests into batches"),
    _tf("allow_version_labels_for_unavailable_models", bool, False, IMPLEMENTED,
        "a new version label may name a version that is not loaded yet"),
    _tf("batching_parameters_file", str, "", IMPLEMENTED,
        "text-format BatchingParameters; needs --enable_batching"),
    _tf("enable_per_model_batching_parameters", bool, False, NO_EFFECT,
        "per-model batching_params.pbtxt files are not read; the global file applies"),
    _tf("model_config_file", str, "", IMPLEMENTED,
        "text-format ModelServerConfig listing the models (instead of --model_base_path)"),
    _tf("model_config_file_poll_wait_seconds", float, 0, IMPLEMENTED,
        "re-read --model_config_file this often; 0 reads it once"),
    _tf("model_name", str, "default", IMPLEMENTED, "the model's name with --model_base_path"),
    _tf("model_base_path", str, "", IMPLEMENTED,
        "folder of the model's numbered version folders (waited for if missing)"),
    _tf("num_load_threads", int, 0, IMPLEMENTED, "versions loaded at the same time; 0 means 1"),
    _tf("num_unload_threads", int, 0, IMPLEMENTED,
        "versions unloaded at the same time; 0 means 1"),
    _tf("max_num_load_retries", int, 5, IMPLEMENTED,
        "a failed load is retried this many times (the version stays LOADING)"),
    _tf("load_retry_interval_micros", int, 60_000_000, IMPLEMENTED,
        "wait between load retries; negative: no wait"),
    _tf("file_system_poll_wait_seconds", float, 1, IMPLEMENTED,
        "look for new versions (and a missing base path) this often; 0 only at start"),
    _tf("flush_filesystem_caches", bool, True, NO_EFFECT,
        "TF's file system caches do not exist here"),
    _tf("tensorflow_session_parallelism", int, 0, IMPLEMENTED,
        "both thread pools' size when the two flags below are 0; 0 lets TensorFlow choose"),
    _tf("tensorflow_session_config_file", str, "", IMPLEMENTED,
        "text-format ConfigProto; its intra/inter op thread counts are used"),
    _tf("tensorflow_intra_op_parallelism", int, 0, IMPLEMENTED,
        "threads one op may use; 0 lets TensorFlow choose"),
    _tf("tensorflow_inter_op_parallelism", int, 0, IMPLEMENTED,
        "ops that may run at once; 0 lets TensorFlow choose"),
    _tf("use_alts_credentials", bool, False, NO_EFFECT,
        "Google ALTS is not available; use --ssl_config_file for TLS"),
    _tf("ssl_config_file", str, "", IMPLEMENTED,
        "text-format SSLConfig: TLS (and mutual TLS with client_verify) on gRPC"),
    _tf("platform_config_file", str, "", NO_EFFECT, "only the TensorFlow platform is served"),
    _tf("per_process_gpu_memory_fraction", float, 0.0, NO_EFFECT, "no GPU here"),
    _tf("saved_model_tags", str, "serve", IMPLEMENTED,
        "comma-separated tag set of the MetaGraph to load"),
    _tf("grpc_channel_arguments", str, "", IMPLEMENTED,
        "comma-separated KEY=VALUE gRPC server arguments (integers passed as integers)"),
    _tf("grpc_max_threads", int, 0, IMPLEMENTED,
        "gRPC worker threads; 0: 4 per CPU, raised to fill batches"),
    _tf("enable_model_warmup", bool, True, IMPLEMENTED,
        "replay assets.extra/tf_serving_warmup_requests before a version serves"),
    _tf("num_request_iterations_for_warmup", int, 1, IMPLEMENTED,
        "times each warmup request is replayed"),
    _tf("version", bool, False, IMPLEMENTED, "print the versions and exit"),
    _tf("monitoring_config_file", str, "", IMPLEMENTED,
        "text-format MonitoringConfig: the Prometheus page on the REST port"),
    _tf("remove_unused_fields_from_bundle_metagraph", bool, True, NO_EFFECT,
        "the MetaGraph is not kept in memory beyond its signatures anyway"),
    _tf("prefer_tflite_model", bool, False, NO_EFFECT, "TFLite models are not served"),
    _tf("num_tflite_pools", int, 0, NO_EFFECT, "TFLite models are not served"),
    _tf("num_tflite_interpreters_per_pool", int, 1, NO_EFFECT, "TFLite models are not served"),
    _tf("enable_signature_method_name_check", bool, False, IMPLEMENTED,
        "refuse Classify/Regress on signatures whose method_name is not classify/regress"),
    _tf("xla_cpu_compilation_enabled", bool, False, NO_EFFECT, "XLA JIT is left as TF sets it"),
    _tf("xla_gpu_compilation_enabled", bool, False, NO_EFFECT, "no GPU here"),
    _tf("enable_profiler", bool, True, NO_EFFECT, "no profiler service"),
    _tf("thread_pool_factory_config_file", str, "", NO_EFFECT,
        "custom thread pool factories are not supported"),
    _tf("mixed_precision", str, "", NO_EFFECT, "models run in the precision they were saved in"),
    _tf("skip_initialize_tpu", bool, False, NO_EFFECT, "no TPU here"),
    _tf("enable_grpc_healthcheck_service", bool, False, IMPLEMENTED,
        "grpc.health.v1 (always on here), answering for '' and TF's two service names"),
    _tf("enable_serialization_as_tensor_content", bool, False, NO_EFFECT,
        "Predict replies use typed value fields"),
)

OUR_FLAGS: tuple[Flag, ...] = (
    Flag("host", str, "127.0.0.1", OURS,
         "address both ports listen on; 0.0.0.0 for other machines (TF: all interfaces)"),
    Flag("rest_api_ssl_config_file", str, "", OURS,
         "text-format SSLConfig for HTTPS on the REST port (may be the --ssl_config_file)"),
    Flag("rest_api_max_body_bytes", int, 64 << 20, OURS,
         "REST request bodies larger than this get HTTP 413"),
    Flag("shutdown_grace_seconds", float, 10.0, OURS,
         "after SIGTERM, how long in-flight requests may finish"),
    Flag("max_concurrent_runs_per_model", int, 2 * _CPUS, OURS,
         "requests of one model running at once (default 2 per CPU); 0 for no limit; not "
         "applied with --enable_batching, whose queue bounds the work"),
    Flag("max_queued_runs_per_model", int, 128, OURS,
         "requests of one model waiting for a run; beyond, UNAVAILABLE / HTTP 503"),
)

FLAGS = {flag.name: flag for flag in TF_FLAGS + OUR_FLAGS}
PORT_FLAGS = ("port", "rest_api_port")
_TRUE, _FALSE = ("true", "1"), ("false", "0")


@dataclasses.dataclass
class ParsedFlags:
    """The command line, parsed.

    Args:
        values: every flag's value (defaults for those not given).
        given: the names given on the command line.
        unknown: arguments that are no flag of ours (TF warns about them and goes on).
        help: --help or -h was given.
    """

    values: dict[str, Any]
    given: set[str]
    unknown: list[str]
    help: bool = False


def _convert(flag: Flag, text: str) -> Any:
    if flag.kind is bool:
        value = text.strip().lower()
        if value in _TRUE or value in _FALSE:
            return value in _TRUE
        raise UserError(f"--{flag.name}={text}: not a boolean",
                        f"write --{flag.name}, --{flag.name}=true or --{flag.name}=false")
    try:
        value = flag.kind(text)
    except ValueError:
        kind = {int: "an integer", float: "a number"}[flag.kind]
        raise UserError(f"--{flag.name}={text}: not {kind}",
                        f"give --{flag.name} {kind}, e.g. --{flag.name}={flag.default}") from None
    if flag.kind is float and not math.isfinite(value):
        raise UserError(f"--{flag.name}={text}: not a finite number",
                        f"give --{flag.name} a number, e.g. --{flag.name}={flag.default}")
    if flag.name.endswith("_poll_wait_seconds") and value > 2**31 - 1:
        # tensorflow_model_server's flags are int32; beyond that the poll thread's wait fails.
        raise UserError(f"--{flag.name}={text}: more than {2**31 - 1} seconds",
                        f"give a smaller wait, or 0 to load once without polling "
                        f"(default {flag.default})")
    if flag.name in PORT_FLAGS and not 0 <= value <= 65535:
        # gRPC would listen on the number modulo 65536 and REST fail after the models load.
        raise UserError(f"--{flag.name}={text}: not a TCP port",
                        f"give a port from 1 to 65535, or 0 to turn it off "
                        f"(default {flag.default})")
    return value


def parse_flags(argv: Sequence[str]) -> ParsedFlags:
    """Parse tensorflow_model_server's command line.

    Args:
        argv: the arguments after the program (or `rnnkit serve`).
    """
    parsed = ParsedFlags(values={name: flag.default for name, flag in FLAGS.items()},
                         given=set(), unknown=[])
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg in ("-h", "--help", "-help", "--helpfull"):
            parsed.help = True
            continue
        if not arg.startswith("-") or arg in ("-", "--"):
            parsed.unknown.append(arg)
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        flag = FLAGS.get(name)
        if flag is None:
            parsed.unknown.append(arg)
            continue
        if not has_value:
            following = args[index] if index < len(args) else None
            if flag.kind is bool:
                if following is not None and following.lower() in _TRUE + _FALSE:
                    value, index = following, index + 1
                else:
                    value = "true"
            elif following is None:
                raise UserError(f"--{name} needs a value",
                                f"write --{name}=VALUE (default {flag.default!r})")
            else:
                value, index = following, index + 1
        parsed.values[name] = _convert(flag, value)
        parsed.given.add(name)
    return parsed


def usage() -> str:
    """The --help text: every flag with its default and what it does here."""
    lines = ["usage: rnnkit serve [--flag=value ...]   (python -m serving takes the same flags)",
             "", "tensorflow_model_server's flags (TF Serving 2.21):"]
    for flag in TF_FLAGS + OUR_FLAGS:
        if flag is OUR_FLAGS[0]:
            lines += ["", "our flags:"]
        default = "" if flag.default == "" else f" (default: {flag.default})"
        note = " [no effect here]" if flag.effect == NO_EFFECT else ""
        lines.append(f"  --{flag.name}: {flag.kind.__name__}{default}{note}")
        lines.append(f"      {flag.help}")
    return "\n".join(lines) + "\n"
