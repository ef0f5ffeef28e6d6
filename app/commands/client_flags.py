"""The flags of the commands that call a running model server, and the client they open.

Shared by `rnnkit predict`, `caption` and `translate` (not a command itself).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.client import ServingClient

# TF Serving's default ports per protocol.
DEFAULT_PORTS = {"grpc": 8500, "rest": 8501}


def add_client_flags(parser: argparse.ArgumentParser, *, model: str | None,
                     timeout: float) -> None:
    """Add --model, --grpc/--rest, --server and --timeout.

    Args:
        parser: the sub-command's parser.
        model: the default served model name; None makes --model required.
        timeout: the default seconds to wait for each reply.
    """
    if model is None:
        parser.add_argument("--model", required=True, metavar="NAME",
                            help="the served model's name")
    else:
        parser.add_argument("--model", default=model, metavar="NAME",
                            help="the served model's name (default: %(default)s)")
    protocol = parser.add_mutually_exclusive_group()
    protocol.add_argument("--grpc", dest="protocol", action="store_const", const="grpc",
                          help="use the gRPC API (the default)")
    protocol.add_argument("--rest", dest="protocol", action="store_const", const="rest",
                          help="use the REST API (binary values go as {\"b64\": ...})")
    parser.set_defaults(protocol="grpc")
    parser.add_argument("--server", metavar="HOST[:PORT]",
                        help="the model server (default: localhost:8500 for gRPC, "
                             "localhost:8501 for REST)")
    parser.add_argument("--timeout", type=float, default=timeout, metavar="SECONDS",
                        help="how long to wait for each reply (default: %(default)s)")


def open_client(args: argparse.Namespace) -> ServingClient:
    """A client of the model server the flags name, on the port of the chosen protocol.

    Args:
        args: parsed flags from add_client_flags.
    """
    from app.web.server import parse_server
    from serving.client import ServingClient
    from serving.errors import UserError

    address = (args.server or "localhost").strip()
    scheme, sep, rest = address.partition("://")
    if sep and scheme.lower() in ("http", "grpc"):  # a URL: http://host:8501/, grpc://host
        address = rest.split("/", 1)[0]
    if ":" not in address.rpartition("]")[2]:  # a bare host (or [v6]) takes the default port
        address = f"{address}:{DEFAULT_PORTS[args.protocol]}"
    try:
        host, port = parse_server(address)
    except UserError:
        name = {"grpc": "gRPC", "rest": "REST"}[args.protocol]
        raise UserError(f"--server {args.server!r} is not HOST:PORT",
                        f"pass the model server's {name} address, e.g. --server "
                        f"localhost:{DEFAULT_PORTS[args.protocol]}") from None
    return ServingClient(host, grpc_port=port, rest_port=port, timeout=args.timeout)
