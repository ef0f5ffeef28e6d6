"""`rnnkit generate`: continue text (or list the likely next words) with a served language model."""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from typing import Any

from app.commands.client_flags import add_client_flags, open_client
from app.model_kinds import GENERATE_SIGNATURE, NEXT_WORDS_SIGNATURE
from serving.errors import UserError

HELP = "continue text with a served language model (or list its next words); prints JSON"
EXAMPLES = """examples:
  rnnkit generate "The movie was"                      # greedy, 20 words
  rnnkit generate "The movie was" --words 30 --temperature 0.8      # sampled from the top 40
  rnnkit generate "The movie was" --temperature 0.8 --seed 7        # the same words again
  rnnkit generate "The movie was" --next               # the 5 likeliest next words
  rnnkit generate "In 1990 , the" --model wiki --rest --server localhost:8501
Serve the model first: rnnkit export language_model --run-dir DIR --base-path exports &&
  rnnkit serve --model_name=language_model --model_base_path=exports/language_model
The temperature, top-k and word-count checks run inside the model: a bad value is the server's
INVALID_ARGUMENT answer. The reply names the seed, so a sample can be repeated.
"""

SAMPLING_TOP_K = 40  # --temperature without --top-k samples among this many words


def _ranged(kind: type, low: float, high: float, what: str) -> Any:
    """An argparse type: `kind` within [low, high] (the export's int32 / int64 / float inputs)."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (low <= value <= high):  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    return convert


INT32 = 2**31 - 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("prompts", nargs="+", metavar="TEXT", help="the text(s) to continue")
    add_client_flags(parser, model="language_model", timeout=60.0)
    parser.add_argument("--words", type=_ranged(int, -INT32, INT32, "a 32-bit integer"),
                        default=20, metavar="N",
                        help="words to generate (default: %(default)s; at most 100)")
    parser.add_argument("--temperature", type=_ranged(float, -3.4e38, 3.4e38, "a finite number"),
                        default=None, metavar="T",
                        help="sample at this temperature (default: greedy, the likeliest word)")
    parser.add_argument("--top-k", type=_ranged(int, -INT32, INT32, "a 32-bit integer"),
                        default=None, metavar="K",
                        help=f"sample among the K likeliest words (default: {SAMPLING_TOP_K} "
                             "with --temperature, else 1 = greedy)")
    parser.add_argument("--seed", type=_ranged(int, 0, 2**63 - 1, "a seed from 0 to 2**63-1"),
                        default=None, metavar="N",
                        help="sampling seed (default: a random one, printed in the reply)")
    parser.add_argument("--next", action="store_true",
                        help="list the likeliest next words and their probabilities instead")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _call(client: Any, args: argparse.Namespace, inputs: dict, signature: str) -> Any:
    from serving.client import ServerReplyError
    from serving.status import Code

    try:
        return client.predict(args.model, inputs, signature_name=signature,
                              protocol=args.protocol)
    except ServerReplyError as err:
        if err.code() != Code.INVALID_ARGUMENT:
            raise
        if re.search(r"has no signature|signature (?:name|key):? \S+ not found",
                     err.details(), re.IGNORECASE):
            raise UserError(f"model {args.model!r} has no {signature!r} signature: it is not "
                            "a language model export",
                            "pass --model NAME of a served language model (rnnkit export "
                            "language_model ...)") from None
        # The model's in-graph check says why: rnnkit's server answers the assertion's parts
        # joined, TF Serving "assertion failed: [reason] [Condition ...]" among graph detail.
        found = re.search(r"assertion failed: \[([^\]]+)\]", err.details())
        reason = found.group(1) if found else " ".join(err.details().split())
        reason = reason.split(" Condition ")[0]  # tf.debugging's own wording after the reason
        raise UserError(f"model {args.model!r} refused the request: {reason}",
                        "check --temperature (> 0), --top-k (>= 1) and --words (0-100)"
                        ) from None


def run(args: argparse.Namespace) -> int:
    """Send the prompts and print the continuations (or next words) as JSON.

    Args:
        args: the parsed command line.
    """
    n = len(args.prompts)
    with open_client(args) as client:
        if args.next:
            reply = _call(client, args, {"text": args.prompts}, NEXT_WORDS_SIGNATURE)
            result: dict[str, Any] = {"model": args.model, "version": reply.version,
                                      "next_words": [
                {"prompt": prompt, "words": [_text(w) for w in words],
                 "probabilities": [round(float(p), 5) for p in probabilities]}
                for prompt, words, probabilities in zip(
                    args.prompts, reply["words"], reply["probabilities"], strict=True)]}
        else:
            sampling = args.temperature is not None or (args.top_k or 1) > 1
            top_k = args.top_k if args.top_k is not None else (SAMPLING_TOP_K if sampling else 1)
            seed = args.seed if args.seed is not None else random.randrange(2**31)
            temperature = args.temperature if args.temperature is not None else 1.0
            inputs = {"text": args.prompts, "temperature": [temperature] * n,
                      "top_k": [top_k] * n, "seed": [seed] * n, "words": [args.words] * n}
            reply = _call(client, args, inputs, GENERATE_SIGNATURE)
            result = {"model": args.model, "version": reply.version, "temperature": temperature,
                      "top_k": top_k, "seed": seed, "generations": [
                          {"prompt": prompt, "continuation": _text(text)}
                          for prompt, text in zip(args.prompts, reply["continuation"],
                                                  strict=True)]}
    json.dump(result, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0
