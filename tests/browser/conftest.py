"""Real-browser set-up: stand-in exports, the embedded model server, the web app, Chromium.

Every process binds 127.0.0.1 on a free port, runs under `timeout` so it stops by itself even if
pytest dies, and is stopped in teardown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVED = ("sentiment", "translator", "captioner", "questions", "pos_tagger", "storyteller")
# Longest any helper process may live; the whole browser suite takes well under a minute.
PROCESS_LIFETIME_S = 300


def free_port() -> int:
    """A free loopback port (bound, then released for the process that needs it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Stop a process we started, politely first; returns its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; the browser tests fail (never skip) without it."""
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: the browser tests need it — install it "
                    "with `bash tests/browser/install_chromium.sh` (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Where screenshots are kept (test-artifacts/, git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def model_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """STAND-IN exports of every kind of model (see standin_models.py)."""
    from standin_models import export_standins

    return export_standins(tmp_path_factory.mktemp("exports"))


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@dataclasses.dataclass
class ModelServer:
    """A started `python -m serving` process.

    Args:
        address: its gRPC address, HOST:PORT.
        rest_port: its REST port (for the readiness check).
        process: the process.
        log: its stdout and stderr.
    """

    address: str
    rest_port: int
    process: subprocess.Popen
    log: Path

    def wait_until_served(self, timeout: float = 90) -> None:
        """Wait until every stand-in reports an AVAILABLE version over REST."""
        deadline = time.monotonic() + timeout
        pending = list(SERVED)
        while pending:
            if self.process.poll() is not None:
                pytest.fail(f"the model server exited with code {self.process.returncode} while "
                            f"starting:\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the model server did not load {pending} in time:\n{_tail(self.log)}")
            try:
                url = f"http://127.0.0.1:{self.rest_port}/v1/models/{pending[0]}"
                with urllib.request.urlopen(url, timeout=2) as response:
                    states = [v["state"] for v in json.load(response)["model_version_status"]]
                if "AVAILABLE" in states:
                    pending.pop(0)
                    continue
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)


@pytest.fixture(scope="module")
def server_ports() -> tuple[int, int]:
    """The model server's gRPC and REST ports, chosen before anything starts."""
    return free_port(), free_port()


@pytest.fixture(scope="module")
def model_server(server_ports: tuple[int, int], model_config: Path,
                 artifacts: Path) -> Iterator[ModelServer]:
    """The embedded model server (`python -m serving`) serving the stand-ins, still starting."""
    grpc_port, rest_port = server_ports
    command = ["timeout", str(PROCESS_LIFETIME_S), sys.executable, "-m", "serving",
               "--host", "127.0.0.1", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
               "--model_config_file", str(model_config)]
    log = artifacts / "model-server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=log_file,
                                   stderr=subprocess.STDOUT)
    try:
        yield ModelServer(f"127.0.0.1:{grpc_port}", rest_port, process, log)
    finally:
        _stop(process)


def _read_url(process: subprocess.Popen, log: Path, timeout: float) -> str:
    """The first line `rnnkit app` prints: the URL it listens on."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        pytest.fail(f"`rnnkit app` printed no URL within {timeout} s:\n{_tail(log)}")
    line = process.stdout.readline().strip()
    if not line.startswith("http://"):
        pytest.fail(f"`rnnkit app` did not start:\n{_tail(log)}")
    return line


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs dir with a training run drawn by the real curve plotter and a gradient-lab run."""
    from pipelines.training.plots import plot_curves
    from pipelines.training.run_dir import write_json

    root = tmp_path_factory.mktemp("runs")
    run = root / "sentiment" / "20250101-120000"
    run.mkdir(parents=True)
    history = {"loss": [0.69, 0.45, 0.33], "val_loss": [0.6, 0.42, 0.38],
               "accuracy": [0.55, 0.79, 0.86], "val_accuracy": [0.68, 0.81, 0.84]}
    plot_curves(history, run / "curves.png", "sentiment")
    write_json(run / "metrics.json", {"best_epoch": 3, "epochs": 3, "history": history})
    write_json(run / "evaluation.json", {"test_accuracy": 0.8432, "examples": 25000})
    lab = root / "lab" / "20250102-090000"
    lab.mkdir(parents=True)
    write_json(lab / "lab.json", {"summary": {"adding/rnn": {"learned": False}}})
    (lab / "report.md").write_text(
        "# Gradient lab\n\nThe vanilla RNN's gradient **vanishes**.\n\n"
        "![gradients](gradient_vs_step.png)\n\n"
        "| cell | T=100 |\n| --- | --- |\n| vanilla RNN | 0.167 |\n| LSTM | 0.002 ✓ |\n")
    plot_curves({"norm": [1.0, 0.1, 0.01]}, lab / "gradient_vs_step.png", "stand-in lab plot")
    return root


def _wait_until_healthy(url: str, log: Path, deadline: float) -> None:
    """Wait until the app answers /api/health: it has loaded its client and reached the server."""
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=10) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as err:
            last = err.read().decode(errors="replace")
        except OSError as err:
            last = str(err)
        time.sleep(0.2)
    pytest.fail(f"`rnnkit app` never reached the model server: {last}\n{_tail(log)}")


@pytest.fixture(scope="module")
def web_app(server_ports: tuple[int, int], runs_dir: Path, artifacts: Path,
            model_config: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """`rnnkit app` in its own process, talking gRPC to the model server; yields its URL.

    It starts before the model server, as a user might start them (and so the two start-ups
    overlap). It is given the exports folder, where it finds the models no registry names.
    """
    command = ["timeout", str(PROCESS_LIFETIME_S), sys.executable, "-m", "app.cli", "app",
               "--server", f"127.0.0.1:{server_ports[0]}", "--port", "0",
               "--runs-dir", str(runs_dir), "--base-path", str(model_config.parent)]
    log = artifacts / "web-app.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                   stderr=log_file, text=True)
    try:
        model_server: ModelServer = request.getfixturevalue("model_server")
        url = _read_url(process, log, timeout=30)
        model_server.wait_until_served()
        _wait_until_healthy(url, log, time.monotonic() + 30)
        yield url
    finally:
        code = _stop(process, signal.SIGINT)  # Ctrl-C: the app must stop cleanly
        process.stdout.close()
    assert code == 0, f"`rnnkit app` exited with {code} on Ctrl-C:\n{_tail(log)}"


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[object]:
    """Headless Chromium driven by Playwright (the system browser; nothing is downloaded)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS,
                                             timeout=30_000)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser) -> Iterator[object]:
    """A fresh browser tab with short timeouts, so a broken page fails instead of hanging."""
    context = browser.new_context(viewport={"width": 1100, "height": 780})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    # The app's Content-Security-Policy must not block anything the app itself does.
    tab.on("console", lambda message: errors.append(message.text)
           if "Content Security Policy" in message.text else None)
    yield tab
    context.close()
    assert not errors, f"errors on the page: {errors}"
