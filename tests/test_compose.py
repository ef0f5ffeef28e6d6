"""docker-compose.yml, the Dockerfile and the models.config they serve."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser
from serving.config_readers import load_model_server_config
from serving.errors import UserError
from serving.flags import parse_flags
from serving.models_config_writer import (
    exported_models,
    main,
    models_config_text,
    write_models_config,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def defaults(command: str) -> str:
    """Replace compose's ${VAR:-default} with the default, as compose does when VAR is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", command)


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(defaults(command)) if isinstance(command, str) else [
        defaults(part) for part in command]


def test_tf_serving_service_serves_the_mounted_models_config(compose):
    server = compose["services"]["model-server"]
    assert defaults(server["image"]).startswith("tensorflow/serving:")
    mounts = [defaults(v).split(":") for v in server["volumes"]]
    assert ["./exports", "/models", "ro"] in mounts
    args = argv(server["command"])
    assert "--model_config_file=/models/models.config" in args
    assert {"8500:8500", "8501:8501"} <= set(server["ports"])
    # Our server takes tensorflow_model_server's flags: the same command must parse for it.
    parsed = parse_flags(args)
    assert parsed.unknown == []
    assert (parsed.values["port"], parsed.values["rest_api_port"]) == (8500, 8501)


def test_app_service_runs_the_web_page_against_the_model_server(compose):
    app = compose["services"]["app"]
    assert app["build"] == "."
    assert "profiles" not in app
    args = argv(app["command"])
    assert args[:2] == ["rnnkit", "app"]
    parsed = build_parser().parse_args(args[1:])
    assert parsed.server == "model-server:8500"
    assert parsed.host == "0.0.0.0"
    assert f"{parsed.port}:{parsed.port}" in app["ports"]
    # It lists every model exported under the mounted exports folder, not only the registry's.
    assert parsed.base_path == "/models"
    assert ["./exports", "/models", "ro"] in [defaults(v).split(":") for v in app["volumes"]]


def test_embedded_profile_runs_our_server_with_the_same_flags(compose):
    embedded = compose["services"]["model-server-embedded"]
    assert embedded["profiles"] == ["embedded"]
    assert embedded["build"] == "." and "entrypoint" not in embedded
    # Our image is a drop-in for tensorflow/serving's: the TF service's very command.
    args = argv(embedded["command"])
    assert args == argv(compose["services"]["model-server"]["command"])
    parsed = parse_flags(args)
    assert parsed.unknown == []
    assert parsed.values["model_config_file"] == "/models/models.config"
    assert (parsed.values["port"], parsed.values["rest_api_port"]) == (8500, 8501)
    mounts = [defaults(v).split(":")[:2] for v in embedded["volumes"]]
    assert ["./exports", "/models"] in mounts
    # Published elsewhere than TF Serving's so both can run at once.
    published = {p.split(":")[0] for p in embedded["ports"]}
    assert not published & {p.split(":")[0] for p in compose["services"]["model-server"]["ports"]}


def test_dockerfile_copies_every_package(compose):
    dockerfile = (REPO / "Dockerfile").read_text()
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    for package in (p.rstrip("*") for p in packages):
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), package
    assert "constraints.txt" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"exports", "runs", ".venv"} <= set(ignored)


@pytest.fixture
def exports(tmp_path, shared_data):
    """An exports dir of TF Serving's test models (linked, not copied), plus two non-models."""
    testdata = shared_data / "tfserving-testdata"
    base = tmp_path / "exports"
    base.mkdir()
    (base / "half_plus_two").symlink_to(testdata / "saved_model_half_plus_two_cpu")
    (base / "two_versions").symlink_to(testdata / "saved_model_half_plus_two_2_versions")
    (base / "notes").mkdir()
    (base / "notes" / "readme.txt").write_text("not a model")
    (base / "half_done" / "7").mkdir(parents=True)  # a version without saved_model.pb
    return base


def test_models_config_lists_every_exported_model(exports):
    assert exported_models(exports) == {"half_plus_two": [123], "two_versions": [123, 124]}
    path = write_models_config(exports)
    assert path == exports / "models.config"
    config = load_model_server_config(path)
    models = config.model_config_list.config
    assert [m.name for m in models] == ["half_plus_two", "two_versions"]
    assert all(m.model_platform == "tensorflow" for m in models)
    for model in models:
        # The container path maps back onto a real exported model on this machine.
        assert model.base_path == f"/models/{model.name}"
        local = exports / Path(model.base_path).relative_to("/models")
        assert any((v / "saved_model.pb").is_file() for v in local.iterdir() if v.name.isdigit())


def test_models_config_in_place_is_accepted_by_our_server(exports):
    from serving.model_manager import validate_config

    path = exports / "in_place.config"
    path.write_text(models_config_text(exports, container_base=str(exports)))
    config = load_model_server_config(path)
    validate_config(config)
    assert {m.base_path for m in config.model_config_list.config} == {
        str(exports / "half_plus_two"), str(exports / "two_versions")}


def test_no_exported_models_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(UserError, match="no exported models under"):
        models_config_text(tmp_path)
    assert main([str(tmp_path)]) == 2
    assert "no exported models" in capsys.readouterr().err
    assert not (tmp_path / "models.config").exists()


def test_dockerfile_entrypoint_is_tf_servings(compose):
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ENTRYPOINT \[\"/usr/bin/tf_serving_entrypoint.sh\"\]$", dockerfile, re.M)
    assert "COPY deploy/tf_serving_entrypoint.sh /usr/bin/tf_serving_entrypoint.sh" in dockerfile
    assert re.search(r"MODEL_NAME=model\b", dockerfile)
    assert re.search(r"MODEL_BASE_PATH=/models\b", dockerfile)
    assert re.search(r"^EXPOSE .*\b8500\b.*\b8501\b", dockerfile, re.M)


def test_entrypoint_serves_model_name_from_model_base_path_on_all_interfaces(shared_data,
                                                                              tmp_path):
    """The entrypoint script, run here as the image runs it (flags added after it win)."""
    import os
    import subprocess
    import sys
    import time

    from serving_harness import free_port, http

    (tmp_path / "half_plus_two").symlink_to(
        shared_data / "tfserving-testdata" / "saved_model_half_plus_two_cpu")
    grpc_port, rest_port = free_port(), free_port()
    env = {**os.environ, "MODEL_NAME": "half_plus_two", "MODEL_BASE_PATH": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = tmp_path / "server.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [str(REPO / "deploy" / "tf_serving_entrypoint.sh"), f"--port={grpc_port}",
             f"--rest_api_port={rest_port}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
            stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while "serving half_plus_two" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        assert f"REST on http://0.0.0.0:{rest_port}" in log.read_text()
        assert http("POST", f"http://127.0.0.1:{rest_port}/v1/models/half_plus_two:predict",
                    {"instances": [1.0]}) == (200, {"predictions": [2.5]})
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0
