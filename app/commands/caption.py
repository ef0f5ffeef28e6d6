"""`rnnkit caption`: caption image files with the captioning model on a running model server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.commands.client_flags import add_client_flags, open_client
from serving.errors import UserError

HELP = "caption JPEG/PNG images with the served captioning model; prints JSON"
EXAMPLES = """examples:
  rnnkit caption photo.jpg                       # the model server at localhost:8500 (gRPC)
  rnnkit caption *.jpg --server models.internal:8500
  rnnkit caption photo.png --rest --server localhost:8501
Serve the model first: rnnkit export captioning && rnnkit serve --model_name=captioner \\
  --model_base_path=exports/captioner (or TF Serving itself).
"""

# Magic numbers of the formats the served model decodes (tf.io.decode_image).
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
BATCH = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files")
    add_client_flags(parser, model="captioner", timeout=60.0)


def read_image(path: Path) -> bytes:
    """The bytes of an image file, refusing files that are not JPEG, PNG, GIF or BMP.

    Args:
        path: the file.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read image {path}: {err.strerror}",
                        "pass existing JPEG or PNG files") from None
    if not data.startswith(IMAGE_SIGNATURES):
        raise UserError(f"{path} is not a JPEG, PNG, GIF or BMP image",
                        "pass image files (convert other formats to JPEG or PNG first)")
    return data


def run(args: argparse.Namespace) -> int:
    """Send the images in batches and print their captions.

    Args:
        args: the parsed command line.
    """
    paths = [Path(p) for p in args.images]
    images = [read_image(p) for p in paths]
    captions: list[str] = []
    version = None
    with open_client(args) as client:
        for start in range(0, len(images), BATCH):
            reply = client.predict(args.model, {"image_bytes": images[start:start + BATCH]},
                                   protocol=args.protocol)
            if "caption" not in reply:
                raise UserError(f"model {args.model!r} answered without a caption output "
                                f"(outputs {sorted(reply)})",
                                "point --model at a model exported by `rnnkit export captioning`")
            version = reply.version
            captions += [c.decode("utf-8") if isinstance(c, bytes) else str(c)
                         for c in reply["caption"].reshape(-1)]
    json.dump({"model": args.model, "version": version,
               "captions": [{"image": str(p), "caption": c} for p, c in zip(paths, captions,
                                                                          strict=True)]},
              sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0
