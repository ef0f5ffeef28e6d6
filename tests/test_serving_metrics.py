"""Metrics: TF Serving's names and labels, parsed back from the Prometheus text format."""

from __future__ import annotations

import re
import threading

import pytest

from serving.metrics import Metrics

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """Parse exposition format 0.0.4 strictly: TYPE lines and samples, nothing else."""
    types: dict[str, str] = {}
    samples = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in types, f"{name} typed twice"
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, _, body, value = match.groups()
        labels = dict(LABEL.findall(body or ""))
        if body:
            assert ",".join(f'{k}="{v}"' for k, v in LABEL.findall(body)) == body, line
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        # prometheus_client names a counter's family NAME_total in HELP/TYPE; samples keep TF's.
        assert name in types or base in types or f"{name}_total" in types, (
            f"sample before its TYPE line: {line}")
        samples.append((name, labels, float(value)))
    return types, samples


def find(samples, name, **labels):
    return [(lab, v) for n, lab, v in samples
            if n == name and all(lab.get(k) == val for k, val in labels.items())]


def test_request_count_and_latency_histogram():
    metrics = Metrics()
    for latency in (0.000005, 0.0001, 0.002, 0.002, 3.0):
        metrics.observe_request("sentiment", "Predict", "GRPC", "OK", latency)
    metrics.observe_request("sentiment", "Predict", "REST", "INVALID_ARGUMENT", 0.001)
    types, samples = parse(metrics.render_prometheus())

    assert types[":tensorflow:serving:request_count_total"] == "counter"
    assert types[":tensorflow:serving:request_latency"] == "histogram"
    assert find(samples, ":tensorflow:serving:request_count", model_name="sentiment",
                status="OK")[0][1] == 5
    assert find(samples, ":tensorflow:serving:request_count",
                status="INVALID_ARGUMENT")[0][1] == 1

    grpc = dict(model_name="sentiment", API="Predict", entrypoint="GRPC")
    buckets = find(samples, ":tensorflow:serving:request_latency_bucket", **grpc)
    # TF's request_latency has exactly these labels (and le): no status.
    assert all(set(lab) == {"model_name", "API", "entrypoint", "le"} for lab, _ in buckets)
    bounds = [float(lab["le"]) for lab, _ in buckets]
    counts = [v for _, v in buckets]
    # TF's Buckets::Exponential(10, 1.8, 33) in microseconds, then +Inf.
    assert len(bounds) == 34 and bounds[:2] == [10, 18] and bounds[-1] == float("inf")
    assert bounds[2] == pytest.approx(32.4)
    assert counts == sorted(counts), "bucket counts must be cumulative"
    assert counts[-1] == 5
    # 5 us is in the first bucket; 100 us is above 58.32 and at most 104.976.
    assert counts[0] == 1
    assert counts[bounds.index(pytest.approx(104.976))] == 2
    assert counts[bounds.index(pytest.approx(58.32))] == 1
    assert find(samples, ":tensorflow:serving:request_latency_count", **grpc)[0][1] == 5
    total = find(samples, ":tensorflow:serving:request_latency_sum", **grpc)[0][1]
    assert total == pytest.approx(1e6 * (0.000005 + 0.0001 + 0.004 + 3.0))


def test_batch_load_and_warmup_metrics():
    metrics = Metrics()
    metrics.observe_batch("sentiment", 3, padded_size=4)
    metrics.observe_batch("sentiment", 4)
    metrics.observe_queuing("model_server_batch_threads", 0.001)
    metrics.observe_load("sentiment", 1, True, model_path="/models/sentiment/1",
                         latency_seconds=0.5)
    metrics.observe_load("sentiment", 2, False)
    metrics.observe_warmup("/models/sentiment/1", "OK", 0.25)
    types, samples = parse(metrics.render_prometheus())

    sizes = find(samples, ":tensorflow:serving:batching:batch_size_bucket", model_name="sentiment")
    by_bound = {lab["le"]: v for lab, v in sizes}
    assert by_bound["2.25"] == 0 and by_bound["3.375"] == 1 and by_bound["5.0625"] == 2
    processed = find(samples, ":tensorflow:serving:batching:processed_batch_size_v2")
    assert sorted((lab["batch_size"], v) for lab, v in processed) == [("4", 2)]
    assert find(samples, ":tensorflow:serving:batching_session:wrapped_run_count")[0][1] == 2
    assert find(samples, ":tensorflow:serving:batching_session:queuing_latency_count",
                thread_pool_name="model_server_batch_threads")[0][1] == 1
    loads = find(samples, ":tensorflow:cc:saved_model:load_attempt_count")
    assert sorted((lab["model_path"], lab["status"]) for lab, _ in loads) == [
        ("/models/sentiment/1", "success"), ("sentiment/2", "fail")]
    assert find(samples, ":tensorflow:cc:saved_model:load_latency")[0][1] == 500000
    assert types[":tensorflow:serving:model_warmup_latency"] == "histogram"
    assert find(samples, ":tensorflow:serving:model_warmup_latency_sum",
                status="OK")[0][1] == pytest.approx(250000)


def test_label_values_are_escaped():
    metrics = Metrics()
    metrics.observe_request('we"ird\\name', "Predict", "REST", "OK", 0.01)
    _, samples = parse(metrics.render_prometheus())
    assert find(samples, ":tensorflow:serving:request_count")[0][0]["model_name"] == (
        'we\\"ird\\\\name')


def test_empty_metrics_render_nothing():
    assert Metrics().render_prometheus() == ""


def test_concurrent_updates_are_all_counted():
    metrics = Metrics()

    def hammer():
        for _ in range(500):
            metrics.observe_request("m", "Predict", "GRPC", "OK", 0.001)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, samples = parse(metrics.render_prometheus())
    assert find(samples, ":tensorflow:serving:request_count")[0][1] == 4000
    assert find(samples, ":tensorflow:serving:request_latency_count")[0][1] == 4000


def test_runtime_latency_and_example_counts_as_tf_serving():
    metrics = Metrics()
    metrics.observe_runtime("sentiment", "Classify", "TF1", 0.002)
    metrics.observe_examples("sentiment", 3)
    metrics.observe_examples("sentiment", 40)
    types, samples = parse(metrics.render_prometheus())
    assert types[":tensorflow:serving:runtime_latency"] == "histogram"
    runtime = find(samples, ":tensorflow:serving:runtime_latency_count")
    assert runtime == [({"model_name": "sentiment", "API": "Classify", "runtime": "TF1"}, 1)]
    counts = {lab["le"]: v for lab, v in
              find(samples, ":tensorflow:serving:request_example_counts_bucket", model="sentiment")}
    # TF's Buckets::Exponential(1, 2, 15): 3 examples fall at le=4, 40 at le=64.
    assert counts["2"] == 0 and counts["4"] == 1 and counts["32"] == 1 and counts["64"] == 2
    assert len(counts) == 16
    assert find(samples, ":tensorflow:serving:request_example_count_total",
                model="sentiment")[0][1] == 43
