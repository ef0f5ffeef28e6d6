"""deploy/: the Kubernetes manifests, the scaled compose file and its nginx.conf agree with each
other and with our CLI and server flags, and every worker's TF_CONFIG is a valid cluster spec."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser
from pipelines.training import distribute
from serving.flags import parse_flags

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kind(path: Path, kind: str) -> dict:
    (found,) = [d for d in _documents(path) if d["kind"] == kind]
    return found


def _serve_flags(args: list[str]) -> argparse.Namespace:
    """tensorflow_model_server flags as our server reads them (none may be unknown)."""
    parsed = parse_flags(args)
    assert parsed.unknown == [], parsed.unknown
    return argparse.Namespace(**parsed.values)


def _defaults(text: str) -> str:
    """Compose's ${VAR:-default} as compose reads it with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.y*ml")), ids=lambda p: p.name)
def test_every_document_parses_and_names_itself(path):
    documents = _documents(path)
    assert documents
    for document in documents:
        if path.parent.name == "k8s":
            assert {"apiVersion", "kind", "metadata", "spec"} <= set(document)
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", document["metadata"]["name"])
        else:
            assert document["services"]


# ---- multi-worker training ---------------------------------------------------------------------

TRAIN = DEPLOY / "k8s" / "train-multi-worker.yaml"


@pytest.fixture(scope="module")
def training():
    job, service = _kind(TRAIN, "Job"), _kind(TRAIN, "Service")
    return job, service, job["spec"]["template"]["spec"]


def _run_worker_script(pod: dict, index: int, runs_root: Path, bin_dir: Path) -> dict:
    """Run the container's shell script with a stand-in `rnnkit` that reports what it got."""
    (container,) = pod["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    script = container["args"][0].replace("/runs/", f"{runs_root}/")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_COMPLETION_INDEX": str(index)}
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=30, check=True)
    return json.loads(done.stdout)


@pytest.fixture
def fake_rnnkit(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "rnnkit"
    tool.write_text('#!/bin/sh\nexec python3 -c \'import json, os, sys; print(json.dumps('
                    '{"argv": sys.argv[1:], "tf_config": os.environ.get("TF_CONFIG")}))\' "$@"\n')
    tool.chmod(0o755)
    return bin_dir


def test_training_job_gives_each_worker_its_tf_config(training, fake_rnnkit, tmp_path):
    job, service, pod = training
    workers = job["spec"]["completions"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["parallelism"] == workers >= 2
    # Pods resolve as <job>-<index>.<subdomain>: the subdomain must be the headless Service's.
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    (container,) = pod["containers"]
    assert port["targetPort"] in [p["containerPort"] for p in container["ports"]]

    expected = [f"{job['metadata']['name']}-{i}.{service['metadata']['name']}:{port['port']}"
                for i in range(workers)]
    for index in range(workers):
        got = _run_worker_script(pod, index, tmp_path / "runs", fake_rnnkit)
        spec = json.loads(got["tf_config"])
        assert spec["cluster"]["worker"] == expected
        role = distribute.cluster_role(got["tf_config"])
        assert (role.task_index, role.num_workers, role.is_chief) == (index, workers, index == 0)
        args = build_parser().parse_args(got["argv"])
        assert (args.command, args.task, args.strategy) == ("train", "sentiment", "multi_worker")
        assert not args.resume


def test_training_job_resumes_from_the_shared_run_dir(training, fake_rnnkit, tmp_path):
    _, _, pod = training
    first = build_parser().parse_args(
        _run_worker_script(pod, 1, tmp_path / "runs", fake_rnnkit)["argv"])
    (first.run_dir / "checkpoints").mkdir(parents=True)
    (first.run_dir / "checkpoints" / "state.json").write_text("{}")
    again = build_parser().parse_args(
        _run_worker_script(pod, 1, tmp_path / "runs", fake_rnnkit)["argv"])
    assert again.resume and again.run_dir == first.run_dir
    # The run dir is on the shared, writable volume every worker mounts.
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    shared = [name for name, m in mounts.items()
              if first.run_dir.is_relative_to(tmp_path / m["mountPath"].strip("/"))]
    assert len(shared) == 1 and not mounts[shared[0]].get("readOnly")
    assert "persistentVolumeClaim" in volumes[shared[0]]


# ---- serving replicas --------------------------------------------------------------------------

SERVING = DEPLOY / "k8s" / "serving.yaml"


def test_serving_deployment_runs_tf_serving_on_the_shared_models(fake_rnnkit):
    deployment, service = _kind(SERVING, "Deployment"), _kind(SERVING, "Service")
    assert deployment["spec"]["replicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("tensorflow/serving:")
    flags = _serve_flags(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": flags.port, "http": flags.rest_api_port}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert {p["port"] for p in service["spec"]["ports"]} == {flags.port, flags.rest_api_port}
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert container["readinessProbe"]["httpGet"]["path"].startswith("/v1/models/")
    assert container["livenessProbe"]["tcpSocket"]["port"] in ports
    # Every replica reads the same models.config from one read-only volume.
    (mount,) = container["volumeMounts"]
    assert mount["readOnly"] and Path(flags.model_config_file).parent == Path(mount["mountPath"])
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and volume["persistentVolumeClaim"]["readOnly"]


# ---- docker compose + nginx --------------------------------------------------------------------


@pytest.fixture(scope="module")
def scaled() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.scaled.yml").read_text())


def _nginx() -> str:
    text = (DEPLOY / "nginx.conf").read_text()
    body = re.sub(r"#[^\n]*", "", text)
    assert body.count("{") == body.count("}")
    for line in (x.strip() for x in body.splitlines()):
        assert not line or line.endswith(("{", "}", ";")), f"unterminated nginx line: {line}"
    return body


def _upstreams(conf: str) -> dict[str, list[str]]:
    return {name: re.findall(r"^\s*server\s+(\S+?)[\s;]", block, re.M)
            for name, block in re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf)}


def test_scaled_compose_replicas_share_one_read_only_model_path(scaled):
    replicas = {n: s for n, s in scaled["services"].items() if n.startswith("model-server-")}
    assert len(replicas) >= 2
    for service in replicas.values():
        assert _defaults(service["image"]).startswith("tensorflow/serving:")
        flags = _serve_flags([_defaults(a) for a in service["command"]])
        assert (flags.port, flags.rest_api_port) == (8500, 8501)
        assert flags.model_config_file == "/models/models.config"
        (volume,) = [_defaults(v) for v in service["volumes"]]
        assert volume.split(":") == ["../exports", "/models", "ro"]
        assert (DEPLOY / "../exports").resolve() == REPO / "exports"  # compose reads from deploy/
        assert "ports" not in service  # reached through the load balancer only


def test_nginx_balances_every_replica_on_both_protocols(scaled):
    conf = _nginx()
    replicas = sorted(n for n in scaled["services"] if n.startswith("model-server-"))
    upstreams = _upstreams(conf)
    rest = [u for u in conf.split("server {")[1:] if "proxy_pass" in u]
    grpc = [u for u in conf.split("server {")[1:] if "grpc_pass" in u]
    assert len(rest) == len(grpc) == 1
    rest_upstream = re.search(r"proxy_pass http://(\w+);", rest[0])[1]
    grpc_upstream = re.search(r"grpc_pass grpc://(\w+);", grpc[0])[1]
    assert sorted(upstreams[rest_upstream]) == [f"{r}:8501" for r in replicas]
    assert sorted(upstreams[grpc_upstream]) == [f"{r}:8500" for r in replicas]
    assert "http2 on;" in grpc[0]  # gRPC is HTTP/2

    balancer = scaled["services"]["load-balancer"]
    assert set(balancer["depends_on"]) == set(replicas)
    assert ["./nginx.conf", "/etc/nginx/nginx.conf", "ro"] in [v.split(":")
                                                               for v in balancer["volumes"]]
    listens = {int(m) for m in re.findall(r"listen\s+(\d+)", conf)}
    published = {int(p.split(":")[1]) for p in balancer["ports"]}
    assert listens == published == {8500, 8501}


def test_scaled_app_talks_to_the_balancer(scaled):
    app = scaled["services"]["app"]
    argv = shlex.split(_defaults(app["command"]))
    parsed = build_parser().parse_args(argv[1:])
    assert parsed.server == "load-balancer:8500"
    assert (DEPLOY / app["build"] / "Dockerfile").is_file()
