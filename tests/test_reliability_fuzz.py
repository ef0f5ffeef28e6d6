"""Bad input, generated: property-based tests of the REST JSON parser and the gRPC tensor
conversion, in-process (many cases) and over the wire (fewer), plus the named nasty cases.

Every case must either be accepted (a valid request) or refused as the client's error with a
message (HTTP 4xx, INVALID_ARGUMENT and its kin); never a 5xx, an unexpected exception, a crash
or a hang. Each test prints how many cases it ran.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import time
from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_harness import export_test_model, free_port
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import rest_json
from serving.status import Code, ServingError
from serving.tensors import datatype_of, to_numpy

# Fixed seeds: the same cases on every run, so a failure here is never a fluke of the draw.
IN_PROCESS = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OVER_THE_WIRE = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.data_too_large])
# What a server may answer a bad request with: the client's error, never the server's.
CLIENT_CODES = {Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.NOT_FOUND}
CLIENT_GRPC_CODES = {grpc.StatusCode[code.name] for code in CLIENT_CODES}
MAX_MESSAGE = 2000
# The test model's signatures a fuzzer may call ("sleep" would sleep for the drawn seconds).
SIGNATURE_NAMES = ["", "serving_default", "add", "classify", "regress", "no_such_signature"]

# ---- strategies ----------------------------------------------------------------------------

surrogates = st.sampled_from(["\ud800", "a\udfffb", "\udc00" * 3])
texts = st.text(max_size=12) | surrogates
b64 = st.builds(lambda s: {"b64": s},
                st.text(alphabet="QUJDRA==+/!-_ \n", max_size=12) | st.just("aGVsbG8="))
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(width=32) | texts | b64)
json_values = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.sampled_from(["text", "x", "a", "b", "b64", "inputs"])
                                        | texts, children, max_size=3)),
    max_leaves=24)


@st.composite
def tensors_json(draw: Any) -> Any:
    """Nested lists shaped like a tensor, sometimes of mixed kinds or made ragged."""
    shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=4))
    leaf = draw(st.sampled_from([st.floats(allow_nan=True), st.integers(-(2**66), 2**66),
                                 st.text(max_size=6), b64, st.booleans(), scalars]))

    def build(dims: list[int]) -> Any:
        if not dims:
            return draw(leaf)
        return [build(dims[1:]) for _ in range(dims[0])]

    value = build(shape)
    if isinstance(value, list) and value and draw(st.booleans()):
        value.append(draw(json_values))  # ragged, or a wrong kind at the end
    return value


values = json_values | tensors_json()
request_documents = st.one_of(
    st.fixed_dictionaries({"instances": values}),
    st.fixed_dictionaries({"inputs": values}),
    st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries(
        {"a": values, "b": values}), max_size=3)}),
    st.fixed_dictionaries({"inputs": st.dictionaries(st.sampled_from(["a", "b", "x", "text"]),
                                                     values, max_size=3)}),
    st.fixed_dictionaries({"signature_name": texts | json_values, "instances": values}),
    st.fixed_dictionaries({"examples": values}, optional={"context": values}),
    st.fixed_dictionaries({"examples": st.lists(st.dictionaries(
        texts, scalars | st.lists(scalars, max_size=3), max_size=3), max_size=3)}),
    st.dictionaries(st.text(max_size=10), values, max_size=3),
    values,
)


@st.composite
def request_bodies(draw: Any) -> bytes:
    """A JSON request body; sometimes cut short, sometimes plain bytes."""
    kind = draw(st.sampled_from(["json", "json", "json", "truncated", "bytes", "valid"]))
    if kind == "valid":  # a request the test model answers, between the bad ones
        return json.dumps({"instances": draw(st.lists(st.text(max_size=20), min_size=1,
                                                       max_size=3))}).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    body = json.dumps(draw(request_documents), allow_nan=True).encode("utf-8", "surrogatepass")
    if kind == "truncated":
        return body[: draw(st.integers(0, max(0, len(body) - 1)))]
    return body


DTYPES = [value for value in types_pb2.DataType.values() if value < 100]


@st.composite
def tensor_protos(draw: Any) -> tensor_pb2.TensorProto:
    """A TensorProto with any dtype (or none that exists), any shape, any values."""
    proto = tensor_pb2.TensorProto(dtype=draw(st.sampled_from(DTYPES) | st.integers(0, 300)))
    dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, -1, 2**20, 2**40, 2**62]) |
                         st.integers(-3, 4), max_size=4))
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d)
                                  for d in dims)
    if draw(st.booleans()):
        proto.tensor_shape.unknown_rank = True
    field = draw(st.sampled_from(["float_val", "double_val", "int_val", "int64_val",
                                  "string_val", "bool_val", "half_val", "uint32_val",
                                  "tensor_content", "none"]))
    count = st.integers(0, 6)
    if field == "tensor_content":
        proto.tensor_content = draw(st.binary(max_size=48))
    elif field == "float_val":
        proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=6)))
    elif field == "double_val":
        proto.double_val.extend(draw(st.lists(st.floats(), max_size=6)))
    elif field in ("int_val", "half_val"):
        getattr(proto, field).extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1),
                                                   max_size=6)))
    elif field == "int64_val":
        proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6)))
    elif field == "uint32_val":
        proto.uint32_val.extend(draw(st.lists(st.integers(0, 2**32 - 1), max_size=6)))
    elif field == "string_val":
        proto.string_val.extend(draw(st.lists(st.binary(max_size=10), max_size=6)))
    elif field == "bool_val":
        proto.bool_val.extend([True] * draw(count))
    return proto


# ---- in-process ------------------------------------------------------------------------------

def _signature(**inputs: int) -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef()
    for alias, dtype in inputs.items():
        signature.inputs[alias].dtype = dtype
    return signature


# The sentiment model's input, the test model's `add`, and numbers of other dtypes.
SIGNATURES = {
    "text": _signature(text=types_pb2.DT_STRING),
    "add": _signature(a=types_pb2.DT_FLOAT, b=types_pb2.DT_FLOAT),
    "ints": _signature(x=types_pb2.DT_INT32),
    "flags": _signature(x=types_pb2.DT_BOOL),
    "wide": _signature(x=types_pb2.DT_DOUBLE, n=types_pb2.DT_INT64),
}


def _refused(err: ServingError) -> None:
    assert err.code == Code.INVALID_ARGUMENT, err
    assert err.message and len(err.message) < MAX_MESSAGE, err.message
    rest_json.dumps({"error": err.message})  # the error reply itself must be writable


def test_rest_parser_in_process_accepts_or_refuses_every_body():
    counts: Counter[str] = Counter()

    @IN_PROCESS
    @given(body=request_bodies())
    def check(body: bytes) -> None:
        counts["cases"] += 1
        try:
            document = rest_json.parse_body(body)
            rest_json.signature_name(document)
        except ServingError as err:
            _refused(err)
            counts["refused: not a request"] += 1
            return
        for name, signature in SIGNATURES.items():
            try:
                inputs, _ = rest_json.predict_inputs(document, signature, name)
            except ServingError as err:
                _refused(err)
                counts["predict refused"] += 1
                continue
            counts["predict accepted"] += 1
            for alias, array in inputs.items():
                assert datatype_of(array) == signature.inputs[alias].dtype
        for method in ("classify", "regress"):
            try:
                rest_json.examples_input(document, method)
                counts["examples accepted"] += 1
            except ServingError as err:
                _refused(err)
                counts["examples refused"] += 1

    check()
    print(f"\nREST parser, in-process: {dict(counts)}")
    assert counts["cases"] == 600
    assert counts["predict accepted"] > 50 and counts["predict refused"] > 500
    assert counts["examples accepted"] > 0 and counts["examples refused"] > 200


def test_grpc_tensor_conversion_in_process_accepts_or_refuses_every_proto():
    counts: Counter[str] = Counter()

    @IN_PROCESS
    @given(proto=tensor_protos())
    def check(proto: tensor_pb2.TensorProto) -> None:
        counts["cases"] += 1
        try:
            array = to_numpy(proto, "x")
        except ServingError as err:
            _refused(err)
            counts["refused"] += 1
            return
        counts["accepted"] += 1
        assert isinstance(array, np.ndarray)
        assert array.size <= 2**24 or array.size <= max(
            len(getattr(proto, f.name)) for f in proto.DESCRIPTOR.fields
            if f.name.endswith("_val")) or proto.tensor_content
        assert datatype_of(array) == proto.dtype or proto.dtype in (
            types_pb2.DT_QINT8, types_pb2.DT_QUINT8, types_pb2.DT_QINT16, types_pb2.DT_QUINT16,
            types_pb2.DT_QINT32)

    check()
    print(f"\ngRPC TensorProto conversion, in-process: {dict(counts)}")
    assert counts["cases"] == 600 and counts["accepted"] > 50 and counts["refused"] > 200


def test_reference_dtypes_are_refused_in_process():
    # Found by the fuzzer above: a DT_*_REF proto decoded into its value type's array.
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT8_E5M2_REF, tensor_content=b"\0")
    with pytest.raises(ServingError, match="reference type"):
        to_numpy(proto, "x")


def test_deep_nesting_and_odd_strings_in_process():
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ServingError, match="nested too deeply") as err:
        rest_json.parse_body(deep)
    assert err.value.code == Code.INVALID_ARGUMENT
    for depth in (65, 500, 900):
        document = rest_json.parse_body(b'{"instances": ' + b"[" * depth + b'"a"' +
                                        b"]" * depth + b"}")
        with pytest.raises(ServingError, match="at most 64 dimensions"):
            rest_json.predict_inputs(document, SIGNATURES["text"], "serving_default")
    document = rest_json.parse_body(b'{"instances": ["\\ud800"]}')
    with pytest.raises(ServingError, match="unpaired UTF-16 surrogate"):
        rest_json.predict_inputs(document, SIGNATURES["text"], "serving_default")
    big = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"])
    big.tensor_shape.dim.add(size=2**31)
    with pytest.raises(ServingError, match=r"holds 2147483648 elements but only 1 values"):
        to_numpy(big, "text")


# ---- over the wire ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The model server, in this process, on loopback: REST and gRPC with the test model."""
    from serving.model_server import ModelServer, ServerOptions

    tmp = tmp_path_factory.mktemp("fuzz")
    export_test_model(tmp, "textual")
    options = ServerOptions(port=free_port(), rest_api_port=free_port(), model_name="textual",
                            model_base_path=str(tmp / "textual"),
                            file_system_poll_wait_seconds=0, rest_api_timeout_in_ms=10000,
                            rest_api_max_body_bytes=16 << 20, enable_model_warmup=False)
    server = ModelServer(options)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{options.port}")
    try:
        yield {"rest_port": options.rest_api_port, "stub":
               prediction_service_pb2_grpc.PredictionServiceStub(channel)}
    finally:
        channel.close()
        server.stop()


def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None,
         ) -> tuple[int, Any]:
    """POST raw bytes; returns the status and the parsed JSON reply."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def _client_error(status: int, reply: Any) -> bool:
    return 400 <= status < 500 and isinstance(reply.get("error"), str) and bool(reply["error"])


def test_rest_over_the_wire_never_answers_5xx(live):
    counts: Counter[str] = Counter()
    paths = st.sampled_from(["/v1/models/textual:predict", "/v1/models/textual:classify",
                             "/v1/models/textual:regress", "/v1/models/textual/versions/1:predict",
                             "/v1/models/nope:predict", "/v1/models/textual/labels/x:predict"])

    @OVER_THE_WIRE
    @given(path=paths, body=request_bodies(),
           signature=st.sampled_from(SIGNATURE_NAMES) | st.text(max_size=8) | st.none())
    def check(path: str, body: bytes, signature: str | None) -> None:
        try:  # point JSON objects at a signature, skipping `sleep` (it would sleep for real)
            document = json.loads(body)
            if isinstance(document, dict) and signature not in (None, "sleep"):
                document["signature_name"] = signature
                body = json.dumps(document).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            pass
        status, reply = post(live["rest_port"], path, body)
        counts["cases"] += 1
        counts[str(status)] += 1
        assert status == 200 or _client_error(status, reply), (status, reply)

    check()
    print(f"\nREST over the wire: {dict(counts)}")
    assert counts["cases"] == 120 and counts["200"] > 0


def test_grpc_over_the_wire_never_answers_a_server_error(live):
    counts: Counter[str] = Counter()
    aliases = st.sampled_from(["text", "a", "b", "x", "inputs", ""])

    valid = st.lists(st.binary(max_size=10), min_size=1, max_size=3).map(
        lambda texts: {"text": tf.make_tensor_proto(np.array(texts, dtype=object))})

    @OVER_THE_WIRE
    @given(inputs=st.dictionaries(aliases, tensor_protos(), max_size=3) | valid,
           signature=st.sampled_from(SIGNATURE_NAMES),
           output_filter=st.lists(st.sampled_from(["upper", "length", "sum", "nope", ""]),
                                  max_size=3),
           name=st.sampled_from(["textual", "textual", "../textual", ""]))
    def check(inputs: dict, signature: str, output_filter: list[str], name: str) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = signature
        request.output_filter.extend(output_filter)
        for alias, proto in inputs.items():
            request.inputs[alias].CopyFrom(proto)
        counts["cases"] += 1
        try:
            live["stub"].Predict(request, timeout=30)
            counts["OK"] += 1
        except grpc.RpcError as err:
            counts[err.code().name] += 1
            assert err.code() in CLIENT_GRPC_CODES and err.details(), (err.code(),
                                                                       err.details())

    check()
    print(f"\ngRPC over the wire: {dict(counts)}")
    assert counts["cases"] == 120 and counts["OK"] > 0


def _deep(depth: int) -> bytes:
    return b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"


# (what, path suffix, body, expected status); 200 where the request is odd but valid.
NAMED_CASES = [
    ("malformed JSON", ":predict", b'{"instances": ["a",', 400),
    ("not an object", ":predict", b'["a"]', 400),
    ("wrong type", ":predict", b'{"instances": [1, 2]}', 400),
    ("ragged lists", ":predict", json.dumps({"signature_name": "add", "instances": [
        {"a": [1, 2], "b": [1, 2]}, {"a": [1], "b": [1, 2]}]}).encode(), 400),
    ("ragged strings", ":predict", b'{"instances": [["a", "b"], ["c"]]}', 400),
    # Shapes are not checked against the signature (TF Serving does not either); the model's
    # ops refuse what they cannot compute: here [1, 3] + [1, 2].
    ("wrong shape", ":predict", json.dumps({"signature_name": "add", "inputs": {
        "a": [[1, 2, 3]], "b": [[1, 2]]}}).encode(), 400),
    ("huge number", ":predict", b'{"signature_name": "add", "inputs": {"a": [[1e400, 1]], '
                                b'"b": [[1, 2]]}}', 200),
    ("integer beyond float32", ":predict", b'{"signature_name": "add", "inputs": {"a": [[' +
     b"9" * 60 + b', 1]], "b": [[1, 2]]}}', 400),
    ("5000-digit integer", ":predict", b'{"instances": [' + b"9" * 5000 + b"]}", 400),
    ("NaN", ":predict", b'{"signature_name": "add", "inputs": {"a": [[NaN, Infinity]], '
                        b'"b": [[1, 2]]}}', 200),
    ("invalid base64", ":predict", b'{"instances": [{"b64": "not base64!"}]}', 400),
    ("unknown signature", ":predict", b'{"signature_name": "nope", "instances": ["a"]}', 400),
    ("100k nested lists", ":predict", _deep(100_000), 400),
    ("900 nested lists", ":predict", _deep(900), 400),
    ("100 nested lists", ":predict", _deep(100), 400),
    ("lone surrogate", ":predict", b'{"instances": ["\\ud800"]}', 400),
    ("surrogate feature name", ":classify", b'{"examples": [{"\\ud800": true}]}', 400),
    ("very long string", ":predict", json.dumps({"instances": ["x" * 5_000_000]}).encode(), 200),
    ("empty batch", ":predict", b'{"instances": []}', 400),
    ("empty columnar batch", ":predict", b'{"inputs": []}', 200),
    ("empty examples", ":classify", b'{"examples": []}', 400),
    ("empty body", ":predict", b"", 400),
    ("invalid UTF-8", ":predict", b'{"instances": ["\xff\xfe"]}', 400),
    ("bad gzip", ":predict", b"\x1f\x8b not gzip", 400),
]


@pytest.mark.parametrize(("what", "suffix", "body", "expected"), NAMED_CASES,
                         ids=[case[0] for case in NAMED_CASES])
def test_named_bad_rest_requests(live, what, suffix, body, expected):
    headers = {"Content-Encoding": "gzip"} if what == "bad gzip" else {}
    started = time.monotonic()
    status, reply = post(live["rest_port"], f"/v1/models/textual{suffix}", body, headers)
    assert status == expected, reply
    if expected != 200:
        assert _client_error(status, reply)
    assert time.monotonic() - started < 10


def test_gzip_bomb_and_broken_http_framing_are_refused(live):
    port = live["rest_port"]
    bomb = gzip.compress(b"[" * (20 << 20))  # 20 MB of '[' in ~20 kB: over the 16 MB limit
    status, reply = post(port, "/v1/models/textual:predict", bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and "limit" in reply["error"]
    for head in (b"POST /v1/models/textual:predict HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
                 b"POST /v1/models/textual:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                 b"\r\nzz\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400"), answer


def test_named_bad_grpc_requests(live):
    stub = live["stub"]

    def predict(inputs: dict[str, tensor_pb2.TensorProto], signature: str = "",
                output_filter: tuple[str, ...] = ()) -> grpc.StatusCode:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "textual"
        request.model_spec.signature_name = signature
        request.output_filter.extend(output_filter)
        for alias, proto in inputs.items():
            request.inputs[alias].CopyFrom(proto)
        try:
            stub.Predict(request, timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            assert err.details()
            return err.code()

    text = tf.make_tensor_proto(np.array([b"review"], dtype=object))
    floats = tf.make_tensor_proto(np.zeros([1, 2], np.float32))
    huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"])
    huge.tensor_shape.dim.add(size=2**40)
    cases = {
        "wrong dtype": predict({"text": floats}),
        "unknown output_filter": predict({"text": text}, output_filter=("nope",)),
        "duplicate output_filter": predict({"text": text}, output_filter=("upper", "upper")),
        "unknown signature": predict({"text": text}, signature="nope"),
        "missing input": predict({}),
        "extra input": predict({"text": text, "x": text}),
        "wrong shape": predict({"a": tf.make_tensor_proto(np.zeros([1, 3], np.float32)),
                                "b": floats}, signature="add"),
        "bad tensor_content": predict({"text": tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_content=b"12345",
            tensor_shape={"dim": [{"size": 3}]})}),
        "2**40 strings from one value": predict({"text": huge}),
        "a valid request": predict({"text": text}),
    }
    assert cases == {
        "wrong dtype": grpc.StatusCode.INVALID_ARGUMENT,
        "unknown output_filter": grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output_filter": grpc.StatusCode.INVALID_ARGUMENT,
        "unknown signature": grpc.StatusCode.FAILED_PRECONDITION,
        "missing input": grpc.StatusCode.INVALID_ARGUMENT,
        "extra input": grpc.StatusCode.INVALID_ARGUMENT,
        "wrong shape": grpc.StatusCode.INVALID_ARGUMENT,
        "bad tensor_content": grpc.StatusCode.INVALID_ARGUMENT,
        "2**40 strings from one value": grpc.StatusCode.INVALID_ARGUMENT,
        "a valid request": grpc.StatusCode.OK,
    }


def test_b64_round_trip_still_works_after_the_fuzzing(live):
    payload = base64.b64encode(b"\x00\xffbytes").decode()
    status, reply = post(live["rest_port"], "/v1/models/textual:predict",
                         json.dumps({"instances": [{"b64": payload}]}).encode())
    assert status == 200 and reply["predictions"][0]["text_bytes"] == {"b64": payload}
