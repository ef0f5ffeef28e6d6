"""`rnnkit predict`: send inputs to a served model and print its reply as JSON."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from app.commands.client_flags import add_client_flags, open_client
from serving.errors import UserError

HELP = "send inputs to a model on a running model server and print the reply as JSON"
EXAMPLES = """examples:
  rnnkit predict --model sentiment "A wonderful, moving film." "Two hours I will never get back."
  rnnkit predict --model translator --rest "¿Dónde está la biblioteca?"
  rnnkit predict --model pos_tagger "The cat sat on the mat."
  rnnkit predict --model captioner photo.jpg other.png
  rnnkit predict --model half_plus_two --server localhost:8500 1.0 2.0 5.0
  rnnkit predict --model translator --signature translate_with_attention "Hola."
Each INPUT is one example of the batch: text as is, @FILE for a file's bytes, @@TEXT for text that
starts with @; a captioner's inputs are image files (a path, with or without @). Numeric inputs
are read as JSON numbers or lists. The reply names the model's kind (classify, tag, seq2seq,
caption; read from its signatures) beside the outputs.
"""

# Signature dtypes whose inputs are given as JSON numbers.
NUMERIC_DTYPES = ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16", "DT_INT8", "DT_INT16",
                  "DT_INT32", "DT_INT64", "DT_UINT8", "DT_UINT16", "DT_UINT32", "DT_UINT64",
                  "DT_BOOL")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    add_client_flags(parser, model=None, timeout=30.0)
    parser.add_argument("--signature", metavar="NAME", default=None,
                        help="signature to run (default: serving_default)")
    parser.add_argument("--input-name", metavar="NAME", default=None,
                        help="the input the values go to (default: the signature's only input)")
    version = parser.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, metavar="N", help="ask for this model version")
    version.add_argument("--label", metavar="LABEL", help="ask for the version with this label")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="one example each: text, @FILE for a file's bytes, @@TEXT for "
                             "text starting with @")


def read_input(text: str, image: bool = False) -> str | bytes:
    """One INPUT argument: text, or the bytes of the file named after @ (or, for an image
    input, of the file it names).

    Args:
        text: the argument as typed.
        image: the input takes image bytes, so a plain argument is a file's path too.
    """
    if text.startswith("@@") and not image:
        return text[1:]
    if text.startswith("@") or image:
        path = Path(text[1:] if text.startswith("@") else text)
        try:
            return path.read_bytes()
        except OSError as err:
            if image:
                raise UserError(f"cannot read image {path}: {err.strerror}",
                                "pass JPEG or PNG files") from None
            raise UserError(f"cannot read input file {path}: {err.strerror}",
                            "give an existing file after @, or @@TEXT for text starting "
                            "with @") from None
    return text


def _numbers(values: list[str | bytes], name: str, dtype: str) -> list[Any]:
    """Parse numeric inputs as JSON values."""
    parsed = []
    for value in values:
        if isinstance(value, bytes):
            raise UserError(f"input {name!r} takes {dtype} numbers, not a file's bytes",
                            "pass the numbers themselves")
        try:
            parsed.append(json.loads(value))
        except ValueError:
            raise UserError(f"input {value!r} is not a number, and input {name!r} takes {dtype}",
                            "pass numbers (or JSON lists of numbers)") from None
    return parsed


def build_inputs(values: list[str | bytes], io: dict[str, Any], input_name: str | None) -> Any:
    """The request's inputs: the examples as one batch for the chosen input.

    Args:
        values: the INPUT arguments, read.
        io: the signature's `inputs` from the metadata (alias -> dtype and tensor_shape).
        input_name: the input asked for, or None for the signature's only input.
    """
    import numpy as np

    if input_name is None:
        if len(io) != 1:
            # A signature runs only with all of its inputs; this command sends one.
            raise UserError(f"the signature takes several inputs {sorted(io)}; rnnkit predict "
                            "sends one",
                            "call it with serving.client.ServingClient.predict(model, {input: "
                            "values, ...}) or REST's columnar \"inputs\" (a language model's "
                            "generate: rnnkit generate)")
        input_name = next(iter(io))
    if input_name not in io:
        raise UserError(f"the signature has no input {input_name!r}",
                        f"use one of {sorted(io)} with --input-name")
    info = io[input_name]
    dtype = info.get("dtype", "")
    if dtype not in NUMERIC_DTYPES:
        return {input_name: np.array(values, dtype=object)}
    array = np.asarray(_numbers(values, input_name, dtype))
    shape = info.get("tensor_shape", {})
    dims = [int(d.get("size", -1)) for d in shape.get("dim", [])]
    # A signature of shape [-1, 1] takes 1.0 2.0 as [[1.0], [2.0]]: add trailing size-1 dims.
    if not shape.get("unknown_rank") and array.ndim < len(dims) and all(
            d == 1 for d in dims[array.ndim:]):
        array = array.reshape(array.shape + (1,) * (len(dims) - array.ndim))
    return {input_name: array}


def to_json(value: Any) -> Any:
    """Arrays as nested lists; bytes as text when UTF-8, else {"b64": ...}.

    Args:
        value: an output array or one of its elements.
    """
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def run(args: argparse.Namespace) -> int:
    """Send the inputs, print the reply.

    Args:
        args: the parsed flags.
    """
    from app.model_kinds import IMAGE_INPUT, model_kind, signature_defs

    signature = args.signature or "serving_default"
    with open_client(args) as client:
        metadata = client.metadata(args.model, args.version, args.label, protocol=args.protocol)
        defs = metadata.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        if signature not in defs:
            raise UserError(f"model {args.model!r} has no signature {signature!r}",
                            f"use one of {sorted(n for n in defs if not n.startswith('__'))} "
                            "with --signature")
        io = defs[signature].get("inputs", {})
        image = (args.input_name or (next(iter(io)) if len(io) == 1 else None)) == IMAGE_INPUT
        inputs = build_inputs([read_input(v, image) for v in args.inputs], io, args.input_name)
        result = client.predict(args.model, inputs, signature_name=signature,
                                version=args.version, label=args.label, protocol=args.protocol)
    reply = {"model": args.model, "kind": model_kind(signature_defs(metadata)),
             "version": result.version, "signature_name": signature,
             "outputs": {name: to_json(value) for name, value in result.items()}}
    json.dump(reply, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0
