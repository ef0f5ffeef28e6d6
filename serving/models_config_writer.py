"""Write the `models.config` that serves every exported model, for TF Serving or our server."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path, PurePosixPath

from serving.errors import UserError
from serving.export import version_number

log = logging.getLogger("serving.models_config_writer")

MODELS_CONFIG_NAME = "models.config"


def exported_models(base_path: Path) -> dict[str, list[int]]:
    """Find the models under an exports dir in TF Serving's layout.

    Args:
        base_path: the exports dir; a model is `<base>/<name>/<int version>/saved_model.pb`.

    Returns:
        Model name -> its version numbers, ascending; names sorted.
    """
    models: dict[str, list[int]] = {}
    if not base_path.is_dir():
        return models
    for model_dir in sorted(p for p in base_path.iterdir() if p.is_dir()):
        # TF Serving takes every all-digit directory name as a version (leading zeros allowed).
        versions = sorted(n for v in model_dir.iterdir()
                          if (n := version_number(v.name)) is not None
                          and (v / "saved_model.pb").is_file())
        if versions:
            models[model_dir.name] = versions
    return models


def models_config_text(base_path: Path, container_base: str = "/models",
                       planned: tuple[str, ...] = ()) -> str:
    """A text-format ModelServerConfig listing every exported model under `base_path`.

    Args:
        base_path: the exports dir on this machine.
        container_base: where that dir is mounted for the server (each model's base_path
            becomes `<container_base>/<name>`); pass str(base_path) to serve it in place.
        planned: names of models to list before they are exported (`rnnkit run` serves while
            it trains): the server polls their base paths and loads each version once written.

    Raises:
        UserError: no exported model under base_path.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    models = [*exported_models(Path(base_path)), *planned]
    models = sorted(dict.fromkeys(models))
    if not models:
        raise UserError(f"no exported models under {base_path} (expected "
                        "<name>/<version number>/saved_model.pb)",
                        "train and export a model first, or point at the right exports dir")
    config = model_server_config_pb2.ModelServerConfig()
    for name in models:
        model = config.model_config_list.config.add()
        model.name = name
        model.base_path = str(PurePosixPath(container_base) / name)
        model.model_platform = "tensorflow"
    header = (f"# Written by rnnkit from {base_path}; serves the latest version of each model.\n"
              "# Use with: tensorflow_model_server --model_config_file=<this file>\n")
    return header + text_format.MessageToString(config)


def write_models_config(base_path: Path, container_base: str = "/models",
                        planned: tuple[str, ...] = ()) -> Path:
    """Write `<base_path>/models.config` (atomically) and return its path.

    Args:
        base_path: the exports dir on this machine.
        container_base: where that dir is mounted for the server.
        planned: models to list before they are exported (see models_config_text).
    """
    base_path = Path(base_path)
    text = models_config_text(base_path, container_base, planned)
    target = base_path / MODELS_CONFIG_NAME
    fd, tmp = tempfile.mkstemp(prefix=".models.config.", dir=base_path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(tmp, 0o644)  # the server may run as another user (e.g. in a container)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote %s", target)
    return target


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.models_config_writer EXPORTS_DIR [--container-base DIR]`.

    Args:
        argv: the arguments (default: sys.argv[1:]).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m serving.models_config_writer",
        description="Write EXPORTS_DIR/models.config listing every exported model.")
    parser.add_argument("exports_dir", type=Path, help="the exports dir (<name>/<version>/)")
    parser.add_argument("--container-base", default="/models",
                        help="where the server sees the exports dir (default: %(default)s, as "
                             "docker-compose.yml mounts it)")
    args = parser.parse_args(argv)
    try:
        print(write_models_config(args.exports_dir, args.container_base))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
