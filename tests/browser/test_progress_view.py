"""The Results page's progress view in Chromium: it follows `rnnkit run` epoch by epoch, no reload.

The job is a stand-in: the test writes the progress file and the run's history.json exactly as
`rnnkit run` and the trainer do (app.run_progress.Progress, one history line per epoch), so the
test takes seconds and trains nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_harness import web_app_without_server

from app.run_progress import Progress
from app.web.server import WebServer

# The page polls every 2 s while the job runs; an update must show well within an epoch.
UPDATE_WITHIN_S = 6


@pytest.fixture()
def job_app(tmp_path: Path) -> Iterator[WebServer]:
    """The web app over an empty runs dir (the progress view needs no model server)."""
    with web_app_without_server(tmp_path / "runs") as server:
        yield server


def _wait_for_text(page, selector: str, text: str) -> float:
    """Seconds until the element's text contains `text` (fails after UPDATE_WITHIN_S)."""
    started = time.monotonic()
    page.wait_for_function("([selector, text]) => { const node = document.querySelector(selector);"
                           " return node && node.textContent.includes(text); }",
                           arg=[selector, text], timeout=UPDATE_WITHIN_S * 1000)
    return time.monotonic() - started


def test_progress_view_follows_every_epoch_without_a_reload(page, job_app: WebServer,
                                                           artifacts: Path) -> None:
    root = job_app.api.runs_dir
    progress = Progress(root, {"sentiment": "sentiment", "translation": "translator"}, "tiny")
    progress.serving({"app": job_app.url})
    run = root / "sentiment" / "20260101-120000"
    run.mkdir(parents=True)
    progress.task("sentiment", "training", run_dir=str(run), epochs=3)

    page.goto(f"{job_app.url}/results")
    row = "#job tr[data-task='sentiment']"
    _wait_for_text(page, row, "training: epoch 0 of 3")
    assert page.text_content("#job tr[data-task='translation']").endswith("waiting")
    marker = page.evaluate("() => { window.notReloaded = true; return window.notReloaded; }")
    assert marker

    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "accuracy": [],
                                       "val_accuracy": []}
    for epoch in (1, 2, 3):
        for key, value in (("loss", 0.7 / epoch), ("val_loss", 0.75 / epoch),
                           ("accuracy", 0.5 + 0.1 * epoch), ("val_accuracy", 0.45 + 0.1 * epoch)):
            history[key].append(value)
        (run / "history.json").write_text(json.dumps(history))  # the trainer's per-epoch write
        waited = _wait_for_text(page, row, f"training: epoch {epoch} of 3")
        assert waited < UPDATE_WITHIN_S
        # Two charts (loss, accuracy), each with one point per epoch and curve.
        charts = page.locator(f"{row} svg.chart")
        assert charts.count() == 2
        assert charts.nth(0).locator("circle").count() == 2 * epoch
        assert page.get_attribute(f"{row} progress", "value") == str(epoch)
    page.screenshot(path=artifacts / "web-progress.png", full_page=True)

    # Done: the row says served with the headline, and the report gains the run.
    (run / "metrics.json").write_text(json.dumps({"epochs_finished": 3, "best_epoch": 3,
                                                  "train_wall_time_s": 95.0}))
    (run / "evaluation.json").write_text(json.dumps({"accuracy": 0.8712, "f1": 0.87,
                                                     "roc_auc": 0.93}))
    progress.task("sentiment", "done", test={"accuracy": 0.8712})
    progress.task("translation", "failed", error="spa_eng not found — put it into the data dir")
    _wait_for_text(page, row, "served: accuracy 0.871")
    _wait_for_text(page, "#job tr[data-task='translation']", "failed: spa_eng not found")
    _wait_for_text(page, "#report-table tr[data-task='sentiment']", "accuracy 0.8712")
    report = page.text_content("#report-table tr[data-task='sentiment']")
    assert "0.8430 ✓ — keras.io bidirectional LSTM example" in report
    assert "1.6 min" in report
    assert page.evaluate("() => window.notReloaded") is True
    page.screenshot(path=artifacts / "web-progress-done.png", full_page=True)
