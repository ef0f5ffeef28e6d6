"""`rnnkit translate`: Spanish -> English with the translation model on a running model server."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from app.commands.client_flags import add_client_flags, open_client
from serving.errors import UserError

HELP = "translate Spanish sentences with the served translation model; prints JSON"
EXAMPLES = """examples:
  rnnkit translate "¿Dónde está la biblioteca?"        # model server at localhost:8500 (gRPC)
  rnnkit translate "Hola." "Tengo hambre." --server models.internal:8500
  rnnkit translate "Hace frío." --rest --server localhost:8501
  rnnkit translate "¿Dónde está la biblioteca?" --attention   # plus tokens and attention weights
Serve the model first: rnnkit export translation && rnnkit serve --model_name=translator \\
  --model_base_path=exports/translator (or TF Serving itself).
"""

ATTENTION_SIGNATURE = "translate_with_attention"
BATCH = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("sentences", nargs="+", metavar="SENTENCE", help="Spanish sentences")
    add_client_flags(parser, model="translator", timeout=60.0)
    parser.add_argument("--attention", action="store_true",
                        help="also return each sentence's tokens and attention weights "
                             f"(the {ATTENTION_SIGNATURE} signature, one sentence per call)")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _output(reply: Any, name: str, model: str) -> Any:
    """One named output of a reply, or a clear error when the model lacks it."""
    if name not in reply:
        raise UserError(f"model {model!r} answered without a {name!r} output "
                        f"(outputs {sorted(reply)})",
                        "point --model at a model exported by `rnnkit export translation`")
    return reply[name]


def run(args: argparse.Namespace) -> int:
    """Send the sentences and print their translations.

    Args:
        args: the parsed command line.
    """
    sentences = [s.strip() for s in args.sentences]
    if not all(sentences):
        raise UserError("an empty sentence was given", "pass non-empty Spanish sentences")
    results: list[dict[str, Any]] = []
    version = None
    with open_client(args) as client:
        if args.attention:
            for sentence in sentences:
                reply = client.predict(args.model, {"text": [sentence]},
                                       signature_name=ATTENTION_SIGNATURE,
                                       protocol=args.protocol)
                version = reply.version
                results.append({
                    "spanish": sentence,
                    "english": _text(_output(reply, "translation", args.model).reshape(-1)[0]),
                    "source_tokens": [_text(t) for t in reply["source_tokens"].reshape(-1)],
                    "output_tokens": [_text(t) for t in reply["output_tokens"].reshape(-1)],
                    "attention": [[round(float(w), 4) for w in row]
                                  for row in reply["attention"][0]],
                })
        else:
            for start in range(0, len(sentences), BATCH):
                batch = sentences[start:start + BATCH]
                reply = client.predict(args.model, {"text": batch}, protocol=args.protocol)
                version = reply.version
                english = _output(reply, "translation", args.model).reshape(-1)
                results += [{"spanish": s, "english": _text(e)}
                            for s, e in zip(batch, english, strict=True)]
    json.dump({"model": args.model, "version": version, "translations": results}, sys.stdout,
              ensure_ascii=False)
    sys.stdout.write("\n")
    return 0
