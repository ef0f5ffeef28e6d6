"""Tensors between numpy and TensorProto, and TensorFlow dtype names for messages."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.status import invalid_argument


def dtype_name(dtype: int) -> str:
    """Name a DataType enum value as TF Serving's messages do, e.g. DT_FLOAT.

    Args:
        dtype: a tensorflow.DataType enum value.
    """
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return f"DT_<{dtype}>"


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype that holds values of a TensorFlow DataType (object for DT_STRING).

    Args:
        dtype: a tensorflow.DataType enum value.
    """
    if dtype == types_pb2.DT_STRING:
        return np.dtype(object)
    return np.dtype(tf.dtypes.as_dtype(dtype).as_numpy_dtype)


def datatype_of(array: np.ndarray) -> int:
    """The TensorFlow DataType enum of a numpy array (bytes and str arrays are DT_STRING).

    Args:
        array: the array.
    """
    if array.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    return tf.dtypes.as_dtype(array.dtype).as_datatype_enum


# A TensorProto may send fewer values than its shape holds (the last one repeats); a few bytes
# could then ask for gigabytes. Such filled tensors may hold at most this many elements.
MAX_FILLED_ELEMENTS = 1 << 24
_VALUE_LISTS = [field.name for field in tensor_pb2.TensorProto.DESCRIPTOR.fields
                if field.name.endswith("_val")]


def _check_size(proto: tensor_pb2.TensorProto, name: str) -> None:
    """Refuse negative dimensions and small protos that would expand into huge arrays."""
    elements = 1
    for dim in proto.tensor_shape.dim:
        if dim.size < 0:
            raise invalid_argument(f"tensor parsing error: {name}: dimension {dim.size} is "
                                   "negative; a request tensor needs its full shape")
        elements *= dim.size
    if proto.tensor_content or elements <= MAX_FILLED_ELEMENTS:
        return
    carried = max(len(getattr(proto, field)) for field in _VALUE_LISTS)
    if elements > carried:
        raise invalid_argument(
            f"tensor parsing error: {name}: shape {[d.size for d in proto.tensor_shape.dim]} "
            f"holds {elements} elements but only {carried} values were sent; send every value "
            f"(or tensor_content) for tensors over {MAX_FILLED_ELEMENTS} elements")


# DataType values above this are the reference types (DT_FLOAT_REF = DT_FLOAT + 100, ...).
_LAST_PLAIN_DTYPE = 100


def to_numpy(proto: tensor_pb2.TensorProto, name: str) -> np.ndarray:
    """Decode a request's TensorProto; malformed protos are the client's error.

    Args:
        proto: the tensor as sent.
        name: its alias, for the error message.
    """
    _check_size(proto, name)
    if proto.dtype > _LAST_PLAIN_DTYPE:  # DT_*_REF: a graph's reference types, never values
        raise invalid_argument(f"tensor parsing error: {name}: {dtype_name(proto.dtype)} is a "
                               "reference type; send the value's own dtype")
    try:
        return tf.make_ndarray(proto)
    except KeyError:  # make_ndarray has no decoder for this dtype (resource, variant, ...)
        raise invalid_argument(f"tensor parsing error: {name}: {dtype_name(proto.dtype)} values "
                               "cannot be sent in a request") from None
    except Exception as err:  # make_ndarray raises several types on bad protos
        raise invalid_argument(f"tensor parsing error: {name}: {err}") from None


# Where TF Serving's Tensor::AsProtoField puts each dtype's values in a TensorProto.
_VALUE_FIELDS = {
    np.dtype(np.float32): "float_val", np.dtype(np.float64): "double_val",
    np.dtype(np.int32): "int_val", np.dtype(np.int16): "int_val", np.dtype(np.int8): "int_val",
    np.dtype(np.uint8): "int_val", np.dtype(np.uint16): "int_val",
    np.dtype(np.int64): "int64_val", np.dtype(np.uint32): "uint32_val",
    np.dtype(np.uint64): "uint64_val", np.dtype(np.bool_): "bool_val",
}
_FIXED_WIDTH = {np.dtype(np.float32): "<f4", np.dtype(np.float64): "<f8"}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _packed_field(field: str, data: bytes) -> bytes:
    """The wire bytes of a packed repeated field holding `data`."""
    number = tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name[field].number
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode a result array as TF Serving does: values in the dtype's typed field (float_val...).

    Clients often read `outputs[...].float_val` directly, so the typed fields are used rather
    than tensor_content, as in TF Serving's default.

    Args:
        array: the array; object arrays must hold bytes.
    """
    field = _VALUE_FIELDS.get(array.dtype)
    if field is None:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=datatype_of(array))
    proto.tensor_shape.dim.extend(
        tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape)
    if array.dtype in _FIXED_WIDTH:
        # Packed float/double fields are the raw little-endian values on the wire: merging
        # those bytes fills float_val at memcpy speed instead of one Python float per value.
        raw = np.ascontiguousarray(array, dtype=_FIXED_WIDTH[array.dtype]).tobytes()
        if raw:
            proto.MergeFromString(_packed_field(field, raw))
    else:
        getattr(proto, field).extend(array.reshape(-1).tolist())
    return proto
