"""`rnnkit bench`: run one of the benchmarks in bench/, each measured against a named peer."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from serving.errors import UserError

HELP = "run a benchmark from bench/ (each prints ratios against a peer measured in the same run)"
EXAMPLES = """examples:
  rnnkit bench layers --quick           # our LSTM/GRU/SimpleRNN against keras.layers
  rnnkit bench serving --quick          # gRPC/REST, batching on/off, against in-process calls
  rnnkit bench load --requests 10000 --clients 64
  rnnkit bench sentiment --profile full # train, evaluate, compare with the published anchors
  rnnkit bench layers -- --help         # a benchmark's own flags (after --)
Everything after the benchmark's name is passed to it.
"""

USES_TENSORFLOW = False  # the benchmark runs in its own process

BENCH_DIR = Path(__file__).resolve().parent.parent.parent / "bench"

# name -> what it measures, against which peer.
BENCHMARKS = {
    "layers": "our LSTM, GRU and SimpleRNN against Keras (TF, XLA), Keras on JAX and PyTorch "
              "(forward, train step)",
    "serving": "the model server over gRPC and REST, batching off and on, against in-process calls",
    "load": "10,000 requests from 64 clients with a version swap (errors, p50/p99)",
    "sentiment": "IMDB accuracy of a profile against keras.io's and TensorFlow's published numbers",
    "translation": "spa-eng BLEU and chrF of a profile against the published anchors",
    "captioning": "Flickr8k BLEU-1..4 and CIDEr-D against the frequent-caption baseline, the "
                  "no-ImageNet ablation (--ablation) and the paper",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME",
                        help="; ".join(f"{name}: {what}" for name, what in BENCHMARKS.items()))
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="flags passed to the benchmark (see `rnnkit bench NAME -- --help`)")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark script in a child process and return its exit code.

    Args:
        args: the parsed command line.
    """
    script = BENCH_DIR / f"{args.name}.py"
    if not script.is_file():
        raise UserError(f"{script} does not exist",
                        "benchmarks run from a source checkout of rnnkit (pip install -e .)")
    forwarded = args.args[1:] if args.args[:1] == ["--"] else args.args
    return subprocess.call([sys.executable, str(script), *forwarded], cwd=BENCH_DIR.parent)
