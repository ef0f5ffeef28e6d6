"""One loaded version of a SavedModel: its signatures, and running them.

TF2 SavedModels (those with an object graph) load through `tf.saved_model.load` and run their
signature functions. TF1-style SavedModels load into a `tf.compat.v1.Session` and run by tensor
name, as TF Serving does; `tf.saved_model.load` cannot load some of them (half_plus_three).
"""

from __future__ import annotations

import abc
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2

from serving.cancellation import (
    cancellable_run,
    cancelled_error,
    check_not_cancelled,
    remaining_ms,
)
from serving.status import Code, ServingError

log = logging.getLogger("serving.servable")

SERVE_TAG = "serve"
# TF2 exports add this entry; it is no serving signature but TF Serving lists it in metadata.
INIT_OP_SIGNATURE = "__saved_model_init_op"


# Thread pools of the Sessions TF1-style models run in (set_parallelism changes them).
_session_config = config_pb2.ConfigProto()


def set_parallelism(intra_op: int, inter_op: int) -> None:
    """Size TensorFlow's thread pools, as TF Serving's --tensorflow_*_parallelism flags do.

    Must run before TensorFlow runs its first op; 0 leaves a pool's size to TensorFlow.

    Args:
        intra_op: threads one op may use.
        inter_op: ops that may run at the same time.
    """
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        _session_config.intra_op_parallelism_threads = intra_op
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        _session_config.inter_op_parallelism_threads = inter_op


def read_meta_graph(path: Path, tags: Sequence[str] = (SERVE_TAG,),
                    ) -> meta_graph_pb2.MetaGraphDef:
    """Read the MetaGraphDef with exactly the given tag set from a SavedModel directory.

    Args:
        path: the version directory holding saved_model.pb (or saved_model.pbtxt).
        tags: the tag set (--saved_model_tags), by default {'serve'}.
    """
    binary, text = path / "saved_model.pb", path / "saved_model.pbtxt"
    saved_model = saved_model_pb2.SavedModel()
    if binary.is_file() or text.is_file():
        try:
            if binary.is_file():
                saved_model.ParseFromString(binary.read_bytes())
            else:
                text_format.Parse(text.read_text(), saved_model)
        except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as err:
            raise ServingError(Code.DATA_LOSS, f"cannot parse the SavedModel in {path}: {err}; "
                                               "export it again") from None
    else:
        raise ServingError(
            Code.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}")
    found = []
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        have = list(meta_graph.meta_info_def.tags)
        if set(have) == wanted:
            return meta_graph
        found.append(have)
    raise ServingError(
        Code.NOT_FOUND,
        f"SavedModel at {path} has no MetaGraph with tags {sorted(wanted)} (tag sets found: "
        f"{found}); pass its tags with --saved_model_tags, or export it with the 'serve' tag")


class Servable(abc.ABC):
    """One loaded model version: signature definitions and a way to run them.

    Args:
        name: the model's name.
        version: the version number (the directory name under the model's base path).
        path: the version directory.
        meta_graph: its MetaGraphDef with `tags`.
        tags: the MetaGraph's tag set.
    """

    def __init__(self, name: str, version: int, path: Path,
                 meta_graph: meta_graph_pb2.MetaGraphDef,
                 tags: Sequence[str] = (SERVE_TAG,)) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs: Mapping[str, meta_graph_pb2.SignatureDef] = dict(
            meta_graph.signature_def)
        self._in_flight = 0
        self._idle = threading.Condition()
        self._load(path, list(tags))

    @abc.abstractmethod
    def _load(self, path: Path, tags: list[str]) -> None:
        """Load the SavedModel's MetaGraph with these tags from the version directory."""

    @abc.abstractmethod
    def input_dtypes(self, signature_name: str) -> dict[str, int]:
        """The DataType each input really takes (a TF1 graph may differ from its signature).

        Args:
            signature_name: a key of `signature_defs`.
        """

    @abc.abstractmethod
    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Run a signature on numpy inputs keyed by alias; returns the requested outputs.

        Args:
            signature_name: a key of `signature_defs`.
            inputs: one array per input alias.
            output_keys: the output aliases to compute.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the model's resources; `run` must not be called afterwards."""

    def retain(self) -> None:
        """Count one request using this servable (so it is not closed under it)."""
        with self._idle:
            self._in_flight += 1

    def release(self) -> None:
        """End one request started with `retain`."""
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request uses this servable; False if `timeout` seconds passed first.

        Args:
            timeout: the longest wait in seconds.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.version})"


# TensorFlow's wrapping of an op's error: a header, where the node was defined (a stack trace or
# "<stack traces unavailable>"), then the op's own message, then node and function names.
_GRAPH_HEADER = re.compile(r"^\s*Graph execution error:\s*")
_DETECTED_AT = re.compile(r"Detected at node .*? defined at \(most recent call last\):\n"
                          r"(?:(?:[ \t]+.*|<stack traces unavailable>|)\n)*")
_NODE_NAMES = re.compile(r"\s*\[\[\{\{.*?\}\}\]\]|\s*\[Op:[^\]]*\]"
                         r"|\{\{(?:function_)?node [^}]*\}\}")
_ROOT_ERRORS = re.compile(r"^\d+ root error\(s\) found\.\s*\(0\) \w+: ", re.DOTALL)
_ASSERT_PARTS = re.compile(r"\[([^\[\]]*)\]")


def clean_run_message(message: str) -> str:
    """TensorFlow's message for a failed run as one sentence: what went wrong, no graph internals.

    Drops "Graph execution error", "Detected at node ... defined at" with its stack trace, the
    [[{{node ...}}]] and [Op:...] names and every root error but the first; an assertion's
    "assertion failed: [part] [part]" becomes its parts joined.

    Args:
        message: an OpError's message.
    """
    text = _DETECTED_AT.sub("", _GRAPH_HEADER.sub("", message))
    text = _ROOT_ERRORS.sub("", text.strip())
    text = text.split("\n  (1) ", 1)[0]
    text = _NODE_NAMES.sub("", text)
    if text.startswith("assertion failed:"):
        text = " ".join(part.strip() for part in _ASSERT_PARTS.findall(text) if part.strip())
    text = " ".join(text.split())
    if not text:
        return "the model failed while running"
    return text if text.endswith((".", "!", "?")) else text + "."


def _run_error(err: Exception) -> ServingError:
    """Translate what TensorFlow raised while running a signature into a status."""
    if isinstance(err, tf.errors.OpError):
        if isinstance(err, tf.errors.CancelledError):
            cancelled = cancelled_error()  # the request's deadline passed or its client left
            if cancelled is not None:
                return cancelled
        return ServingError(Code(err.error_code), clean_run_message(err.message))
    if isinstance(err, UnicodeDecodeError):
        # TensorFlow's error quoted the request's bytes (e.g. a tf.Example that does not
        # parse) and its message could not be read as text.
        return ServingError(Code.INVALID_ARGUMENT,
                            "the model could not read the input (its error quotes bytes that "
                            "are not UTF-8): check that each value is what the signature "
                            "takes, e.g. a serialized tf.Example for Classify")
    # Argument binding of signature functions (wrong shape or dtype) raises these.
    return ServingError(Code.INVALID_ARGUMENT, str(err))


class FunctionServable(Servable):
    """A TF2 SavedModel, run through its signature functions (arguments as Servable's)."""

    def _load(self, path: Path, tags: list[str]) -> None:
        self._loaded = tf.saved_model.load(str(path), tags=tags)
        self._functions = dict(self._loaded.signatures)

    def input_dtypes(self, signature_name: str) -> dict[str, int]:
        """See `Servable.input_dtypes`."""
        signature = self.signature_defs[signature_name]
        return {alias: info.dtype for alias, info in signature.inputs.items()}

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_keys: Sequence[str]) -> dict[str, np.ndarray]:
        """See `Servable.run`."""
        function = self._functions.get(signature_name)
        if function is None:
            raise ServingError(Code.FAILED_PRECONDITION,
                               f"signature '{signature_name}' cannot be run (it has no function)")
        dtypes = self.input_dtypes(signature_name)
        try:
            tensors = {alias: tf.convert_to_tensor(value, dtype=dtypes.get(alias))
                       for alias, value in inputs.items()}
            self._check_shapes(signature_name, tensors)
            # The request's deadline or its client's going away stops the run (cancellation).
            with cancellable_run():
                outputs = function(**tensors)
            return {key: _as_array(outputs[key].numpy()) for key in output_keys}
        except (tf.errors.OpError, TypeError, ValueError) as err:
            raise _run_error(err) from None

    def _check_shapes(self, signature_name: str, tensors: Mapping[str, tf.Tensor]) -> None:
        """Each input's rank and fixed sizes must be the signature's: a TF2 signature function
        runs a tensor of another rank anyway, and fails deep inside with an index or
        reduction error that names no input (a scalar `temperature`, a flat `tokens` list)."""
        for alias, tensor in tensors.items():
            info = self.signature_defs[signature_name].inputs.get(alias)
            if info is None or info.tensor_shape.unknown_rank:
                continue
            dims = [d.size for d in info.tensor_shape.dim]
            shape = tensor.shape.as_list()
            if len(shape) != len(dims) or any(
                    0 <= d != n for d, n in zip(dims, shape, strict=True)):
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"input '{alias}' has shape {shape}, but signature '{signature_name}' "
                    f"takes shape {dims} (-1: any size; the first is the batch)")

    def close(self) -> None:
        """See `Servable.close`."""
        self._functions = {}
        self._loaded = None


class SessionServable(Servable):
    """A TF1-style SavedModel, loaded into a Session and run by tensor names, like TF Serving
    (arguments as Servable's)."""

    def _load(self, path: Path, tags: list[str]) -> None:
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=_session_config)
        with self._graph.as_default():
            tf.compat.v1.saved_model.loader.load(self._session, tags, str(path))
        self._callables: dict[tuple[tuple[str, ...], tuple[str, ...]], object] = {}
        self._callables_lock = threading.Lock()
        self._input_dtypes: dict[str, dict[str, int]] = {}

    def input_dtypes(self, signature_name: str) -> dict[str, int]:
        """See `Servable.input_dtypes`."""
        dtypes = self._input_dtypes.get(signature_name)
        if dtypes is None:
            dtypes = {}
            for alias, info in self.signature_defs[signature_name].inputs.items():
                try:
                    tensor = self._graph.get_tensor_by_name(info.name)
                    dtypes[alias] = tensor.dtype.as_datatype_enum
                except (KeyError, ValueError):
                    dtypes[alias] = info.dtype
            self._input_dtypes[signature_name] = dtypes
        return dtypes

    def _callable(self, feeds: tuple[str, ...], fetches: tuple[str, ...], timeout_ms: int = 0):
        key = (feeds, fetches, timeout_ms)
        runner = self._callables.get(key)
        if runner is None:
            with self._callables_lock:
                runner = self._callables.get(key)
                if runner is None:
                    # Session.run checks fed arrays against the tensors' static shapes; TF
                    # Serving's C++ session does not (half_plus_two's x is [-1, 1] yet its
                    # documented request sends [1.0, 2.0, 5.0]). A C++ callable behaves the same.
                    make = getattr(self._session, "_make_callable_from_options", None)
                    if make is None:  # a TensorFlow without it: Session.run's checks apply
                        runner = self._session.make_callable(list(fetches), list(feeds))
                    else:
                        # As TF Serving passes a request's deadline into RunOptions: the
                        # Session cancels the step when the time is up.
                        options = config_pb2.CallableOptions(feed=list(feeds),
                                                             fetch=list(fetches))
                        options.run_options.timeout_in_ms = timeout_ms
                        runner = make(options)
                    self._callables[key] = runner
        return runner

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_keys: Sequence[str]) -> dict[str, np.ndarray]:
        """See `Servable.run`."""
        signature = self.signature_defs[signature_name]
        aliases = tuple(inputs)
        feeds = tuple(signature.inputs[alias].name for alias in aliases)
        fetches = tuple(signature.outputs[key].name for key in output_keys)
        check_not_cancelled()
        # The run's own timeout is the request's remaining time rounded up to a power of two
        # milliseconds, so that a few callables serve every deadline (a run may outlive its
        # deadline by less than its remaining time).
        remaining = remaining_ms()
        timeout_ms = 0 if remaining is None else 1 << (remaining - 1).bit_length()
        try:
            values = self._callable(feeds, fetches, timeout_ms)(
                *(inputs[alias] for alias in aliases))
        except (tf.errors.OpError, TypeError, ValueError) as err:
            raise _run_error(err) from None
        return dict(zip(output_keys, values, strict=True))

    def close(self) -> None:
        """See `Servable.close`."""
        with self._callables_lock:
            self._callables.clear()
        self._session.close()


def load_servable(name: str, version: int, path: Path,
                  tags: Sequence[str] = (SERVE_TAG,)) -> Servable:
    """Load one version directory, choosing the TF2 or the Session path by its contents.

    Args:
        name: the model's name.
        version: the version number.
        path: the version directory.
        tags: the MetaGraph's tag set (--saved_model_tags).
    """
    meta_graph = read_meta_graph(path, tags)
    started = time.perf_counter()
    if meta_graph.object_graph_def.nodes:
        servable: Servable = FunctionServable(name, version, path, meta_graph, tags)
    else:
        servable = SessionServable(name, version, path, meta_graph, tags)
    log.info("loaded %s version %d from %s in %.2f s (%s)", name, version, path,
             time.perf_counter() - started, type(servable).__name__)
    return servable


def _as_array(value: object) -> np.ndarray:
    """An output as an array: a scalar string tensor's `.numpy()` is plain bytes, not an array."""
    return np.array(value, dtype=object) if isinstance(value, bytes) else value
