"""TF Serving's REST JSON: request bodies to numpy and tf.Examples, results back to JSON.

Predict takes the row format (`instances`, one entry per example) or the columnar format
(`inputs`, one entry per input) and answers in the same format (`predictions` or `outputs`).
Binary strings travel as {"b64": "..."}; string outputs whose alias ends in `_bytes` are sent
that way too. Float32 values are written with the fewest digits that read back to the same
float32, so 0.1f is written 0.1 rather than 0.10000000149011612.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.status import invalid_argument
from serving.tensors import numpy_dtype

ROW, COLUMNAR = "row", "columnar"
BYTES_SUFFIX = "_bytes"
FLOAT32_MAX = float(np.finfo(np.float32).max)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_RANK = 64  # numpy's limit on dimensions; deeper lists cannot be a tensor here
FLOAT_TYPES = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16)
INT_TYPES = (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64,
             types_pb2.DT_UINT8, types_pb2.DT_UINT16, types_pb2.DT_UINT32, types_pb2.DT_UINT64)


def type_name(dtype: int) -> str:
    """TensorFlow's short name of a DataType ('float', 'int32', 'string'), as TF messages use.

    Args:
        dtype: a tensorflow.DataType enum value.
    """
    return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _snippet(value: Any, limit: int = 80) -> str:
    try:
        text = json.dumps(value)
    except RecursionError:
        return f"<{_json_type(value)} nested too deeply to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def dumps(document: Any) -> bytes:
    """Encode a reply as JSON bytes (NaN and Infinity written as TF Serving writes them).

    Args:
        document: the reply.
    """
    # A lone surrogate (only from a client's "\ud800") cannot be UTF-8: keep it as its escape.
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "backslashreplace")


def parse_body(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object.

    Args:
        body: the raw (already decompressed) body.
    """
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        # orjson first: on big bodies it is faster than json, and other threads (the event loop
        # answering /healthz) stall for at most ~0.1 s during one parse where json.loads holds
        # the GIL throughout (0.8 s for 41 MiB of floats; docs/reliability.md).
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = _loads_python(body)  # what orjson refuses, json decides
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {_snippet(document)} Is not object")
    return document


def _loads_python(body: bytes) -> Any:
    """Parse with Python's json: it takes what TF's parser also takes and orjson does not (NaN,
    Infinity, a byte-order mark, lone surrogate escapes), and words the errors of the rest."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise invalid_argument(f"JSON Parse error: {err}") from None
    except RecursionError:  # Python's json recurses once per nested array or object
        raise invalid_argument("JSON Parse error: arrays or objects are nested too deeply "
                               f"(a tensor has at most {MAX_RANK} dimensions)") from None


def signature_name(document: Mapping[str, Any]) -> str:
    """The optional 'signature_name' of a request ('' when absent).

    Args:
        document: the parsed request.
    """
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"JSON Value: {_snippet(name)} not formatted correctly. "
                               "'signature_name' key must be a string value.")
    return name


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _utf8(text: str, where: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise invalid_argument(f"{where}: string {_snippet(text)} holds an unpaired UTF-16 "
                               "surrogate; send valid Unicode, or bytes as {\"b64\": ...}"
                               ) from None


def _decode_b64(value: dict[str, str]) -> bytes:
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument(f"Unable to base64 decode {_snippet(value)}") from None


def _dense_shape(value: Any) -> list[int]:
    """The shape a nested list claims, following first elements as TF Serving does."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _find_ragged(value: Any, shape: list[int], where: str) -> str | None:
    """Describe the first place a nested list departs from `shape`, or None if it is dense."""
    if not shape:
        return f"{where} is a list where a value was expected" if isinstance(value, list) else None
    if not isinstance(value, list):
        return f"{where} is a value where a list of {shape[0]} was expected"
    if len(value) != shape[0]:
        return f"{where} has {len(value)} items where {shape[0]} were expected"
    for index, item in enumerate(value):
        problem = _find_ragged(item, shape[1:], f"{where}[{index}]")
        if problem:
            return problem
    return None


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _fits(value: Any, dtype: int) -> bool:
    if dtype == types_pb2.DT_STRING:
        return isinstance(value, str) or _is_b64(value)
    if dtype == types_pb2.DT_BOOL:
        return isinstance(value, bool)
    if dtype in INT_TYPES:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_error(value: Any, dtype: int, where: str) -> Exception:
    for leaf in _leaves(value):
        if not _fits(leaf, dtype):
            return invalid_argument(
                f"{where}: JSON Value: {_snippet(leaf)} Type: {_json_type(leaf)} is not of "
                f"expected type: {type_name(dtype)}")
    return invalid_argument(f"{where}: values out of range for type {type_name(dtype)}")


def tensor_from_json(value: Any, dtype: int, where: str) -> np.ndarray:
    """Convert a JSON value (scalar or nested lists) into an array of a signature's dtype.

    Args:
        value: the JSON value.
        dtype: the DataType the signature declares.
        where: names the value in error messages, e.g. "instances (input 'x')".
    """
    shape = _dense_shape(value)
    if len(shape) > MAX_RANK:
        raise invalid_argument(f"{where}: lists nested {len(shape)} deep; a tensor has at most "
                               f"{MAX_RANK} dimensions")
    if dtype == types_pb2.DT_STRING:
        ragged = _find_ragged(value, shape, where)
        if ragged:
            raise invalid_argument(f"{ragged}: every item of a tensor must have the same shape")
        flat = []
        for leaf in _leaves(value):
            if isinstance(leaf, str):
                flat.append(_utf8(leaf, where))
            elif _is_b64(leaf):
                flat.append(_decode_b64(leaf))
            else:
                raise _type_error(value, dtype, where)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if dtype not in FLOAT_TYPES + INT_TYPES + (types_pb2.DT_BOOL,):
        raise invalid_argument(f"{where}: inputs of type {type_name(dtype)} cannot be sent as "
                               "JSON")
    try:
        raw = np.array(value)
    except (ValueError, OverflowError):  # ragged lists
        raw = None
    if raw is None or list(raw.shape) != shape:
        ragged = _find_ragged(value, shape, where)
        if ragged:
            raise invalid_argument(f"{ragged}: every item of a tensor must have the same shape")
        raise _type_error(value, dtype, where)
    if raw.size:
        kinds = "b" if dtype == types_pb2.DT_BOOL else "iu" if dtype in INT_TYPES else "iuf"
        if raw.dtype.kind not in kinds:
            raise _type_error(value, dtype, where)
    target = numpy_dtype(dtype)
    if dtype in INT_TYPES and raw.size:
        limits = np.iinfo(target)
        if raw.min() < limits.min or raw.max() > limits.max:
            raise invalid_argument(f"{where}: a value lies outside the range of "
                                   f"{type_name(dtype)} ([{limits.min}, {limits.max}])")
    with np.errstate(over="ignore"):
        array = raw.astype(target)
    if dtype in FLOAT_TYPES and raw.size and np.any(np.isinf(array) & np.isfinite(raw)):
        bad = raw[np.isinf(array) & np.isfinite(raw)].flat[0]
        raise invalid_argument(f"Cannot convert JSON value: {bad} to {type_name(dtype)} without "
                               "loss of precision.")
    return array


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def predict_inputs(document: Mapping[str, Any], signature: meta_graph_pb2.SignatureDef,
                   name: str) -> tuple[dict[str, np.ndarray], str]:
    """Read a predict request's tensors in row or columnar format.

    Args:
        document: the parsed request.
        signature: the signature it targets (its inputs' names and dtypes).
        name: the signature's name, for messages.

    Returns:
        The inputs by alias, and ROW or COLUMNAR.
    """
    dtypes = {alias: info.dtype for alias, info in signature.inputs.items()}
    if not dtypes:
        raise invalid_argument(f"Failed to get input map for signature: {name} (it has no "
                               "inputs)")
    if "instances" in document and "inputs" in document:
        raise invalid_argument("Not formatted correctly expecting only one of 'inputs' or "
                               "'instances' keys to exist")
    if "instances" in document:
        return _row_inputs(document["instances"], dtypes), ROW
    if "inputs" in document:
        return _columnar_inputs(document["inputs"], dtypes), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _row_inputs(instances: Any, dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid_argument("Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("No values in 'instances' array")
    if not _is_object(instances[0]):
        if len(dtypes) > 1:
            raise invalid_argument(
                "instances is a plain list, but expecting list of objects as multiple input "
                f"tensors required as per tensorinfo_map: {','.join(sorted(dtypes))}")
        for index, item in enumerate(instances):
            if _is_object(item):
                raise invalid_argument(f"Expecting value/list but got object at item {index} "
                                       "of input list")
        (alias, dtype), = dtypes.items()
        return {alias: tensor_from_json(instances, dtype, "instances")}
    columns: dict[str, list[Any]] = {alias: [] for alias in dtypes}
    for index, item in enumerate(instances):
        if not _is_object(item):
            raise invalid_argument(f"Expecting object but got list at item {index} of input "
                                   "list")
        if set(item) != set(dtypes):
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_snippet(item)} keys must be equal to: {','.join(sorted(dtypes))}")
        for alias, value in item.items():
            columns[alias].append(value)
    return {alias: tensor_from_json(values, dtypes[alias], f"instances (input '{alias}')")
            for alias, values in columns.items()}


def _columnar_inputs(inputs: Any, dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    if not _is_object(inputs):
        if len(dtypes) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors required as per tensorinfo_map: {','.join(sorted(dtypes))}")
        (alias, dtype), = dtypes.items()
        return {alias: tensor_from_json(inputs, dtype, "inputs")}
    tensors = {}
    for alias, dtype in dtypes.items():
        if alias not in inputs:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        tensors[alias] = tensor_from_json(inputs[alias], dtype, f"inputs['{alias}']")
    return tensors


def _string_value(value: bytes, as_bytes: bool) -> Any:
    if not as_bytes:
        try:
            return value.decode()
        except UnicodeDecodeError:
            pass  # not text: base64 keeps the JSON valid and the bytes intact
    return {"b64": base64.b64encode(value).decode("ascii")}


def float32_values(values: Any) -> Any:
    """Float32 numbers as Python floats with float32's shortest digits (nested lists kept).

    Args:
        values: a float32-convertible array or nested list.
    """
    # numpy prints float32 with the fewest digits that round-trip; the float64 parsed from
    # that text is what json writes back out, digit for digit.
    return np.asarray(values, dtype=np.float32).astype(str).astype(np.float64).tolist()


def json_values(array: np.ndarray, alias: str) -> Any:
    """Convert an output array into JSON values (nested lists), as TF Serving writes them.

    Args:
        array: the output.
        alias: its name in the signature (a `_bytes` suffix sends strings as base64).
    """
    kind = array.dtype.kind
    if kind in "OSU":
        as_bytes = alias.endswith(BYTES_SUFFIX)
        flat = np.empty(array.size, dtype=object)
        flat[:] = [_string_value(item if isinstance(item, bytes) else str(item).encode(),
                                 as_bytes) for item in array.reshape(-1).tolist()]
        return flat.reshape(array.shape).tolist()
    if kind == "f" and array.dtype != np.float64:
        return float32_values(array)
    if kind in "biuf":
        return array.tolist()
    if array.dtype.name == "bfloat16":
        return float32_values(array)
    raise invalid_argument(f"Failed to write JSON value for output '{alias}' of type "
                           f"{array.dtype}")


def predict_response(outputs: Mapping[str, np.ndarray], request_format: str) -> dict[str, Any]:
    """Build the predict reply: {"predictions": [...]} (row) or {"outputs": ...} (columnar).

    Args:
        outputs: output alias -> array.
        request_format: ROW or COLUMNAR, as the request was.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    values = {alias: json_values(array, alias) for alias, array in outputs.items()}
    if request_format == COLUMNAR:
        if len(values) == 1:
            return {"outputs": next(iter(values.values()))}
        return {"outputs": values}
    batch = None
    for alias, array in outputs.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {alias} has no shape information; the row "
                                   "format needs a batch dimension (use \"inputs\" instead)")
        if batch is not None and array.shape[0] != batch:
            raise invalid_argument(f"Tensor name: {alias} has inconsistent batch size: "
                                   f"{array.shape[0]} expecting: {batch}")
        batch = array.shape[0]
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{alias: rows[index] for alias, rows in values.items()}
                            for index in range(batch or 0)]}


def _add_feature_value(feature: feature_pb2.Feature, name: str, value: Any) -> None:
    if isinstance(value, bool):
        kind, item = "int64_list", int(value)
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise invalid_argument(f"Feature: {name} has an element outside int64's range. "
                                   "Only int64 is supported.")
        kind, item = "int64_list", value
    elif isinstance(value, float):
        if abs(value) > FLOAT32_MAX and value != float("inf") and value != float("-inf"):
            raise invalid_argument(f"Cannot convert JSON value: {value} to float without loss "
                                   "of precision.")
        kind, item = "float_list", value
    elif isinstance(value, str):
        kind, item = "bytes_list", _utf8(value, f"Feature: {name}")
    elif _is_b64(value):
        kind, item = "bytes_list", _decode_b64(value)
    else:
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: "
                               f"{_json_type(value)}")
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: "
                               f"{current.removesuffix('_list')}")
    getattr(feature, kind).value.append(item)


def example_from_json(value: Any, where: str) -> example_pb2.Example:
    """Build a tf.train.Example from {feature: value or list of values}.

    Floats (numbers with a fraction or exponent) become float_list, integers and booleans
    int64_list, strings and {"b64": ...} bytes_list.

    Args:
        value: the JSON object.
        where: names it in error messages.
    """
    if not isinstance(value, dict):
        raise invalid_argument(f"{where}: Example must be JSON object but got JSON "
                               f"{_json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        _utf8(name, f"{where}: feature name")
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(feature, name, item)
    return example


def examples_input(document: Mapping[str, Any], method: str) -> input_pb2.Input:
    """Read a classify/regress request: {"examples": [...], "context": {...}}.

    Args:
        document: the parsed request.
        method: "classify" or "regress", for messages.
    """
    examples = document.get("examples")
    if examples is None:
        raise invalid_argument(f"When method is {method}, key 'examples' is expected and was "
                               "not found")
    if not isinstance(examples, list):
        raise invalid_argument("Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument("'examples' value is an empty array")
    request_input = input_pb2.Input()
    if "context" in document:
        listed = request_input.example_list_with_context
        listed.context.CopyFrom(example_from_json(document["context"], "context"))
    else:
        listed = request_input.example_list
    for index, value in enumerate(examples):
        listed.examples.add().CopyFrom(example_from_json(value, f"examples[{index}]"))
    return request_input


def classify_response(result: classification_pb2.ClassificationResult) -> dict[str, Any]:
    """Build {"results": [[[label, score], ...], ...]} from a ClassificationResult.

    Args:
        result: one Classifications per example.
    """
    rows = []
    for classifications in result.classifications:
        scores = float32_values([entry.score for entry in classifications.classes])
        rows.append([[entry.label, score]
                     for entry, score in zip(classifications.classes, scores, strict=True)])
    return {"results": rows}


def regress_response(result: regression_pb2.RegressionResult) -> dict[str, Any]:
    """Build {"results": [value, ...]} from a RegressionResult.

    Args:
        result: one Regression per example.
    """
    return {"results": float32_values([entry.value for entry in result.regressions])}


def proto_json(message: Message) -> Any:
    """A proto as TF Serving's REST API prints it: field names kept, defaults printed.

    Args:
        message: the proto.
    """
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
