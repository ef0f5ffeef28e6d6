"""Server metrics under TF Serving's names and labels, rendered by prometheus_client.

Names are TF Serving's monitoring names with "/" turned into ":" as its PrometheusExporter does
(`/tensorflow/serving/request_count` -> `:tensorflow:serving:request_count`), with exactly TF's
label names; latencies are in microseconds and histograms use TF's exponential buckets, so
dashboards built for TF Serving work unchanged. The values are kept here (TF's samplers count in
microseconds with their own buckets, which prometheus_client's seconds-based histograms cannot
express) and handed to prometheus_client's text renderer through a collector. One difference: a
value equal to a bucket bound counts in that bucket (Prometheus' `le`, less or equal); TF's own
histograms count it in the next one.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
EXAMPLE_COUNTS = ":tensorflow:serving:request_example_counts"
EXAMPLE_COUNT_TOTAL = ":tensorflow:serving:request_example_count_total"
BATCH_SIZE = ":tensorflow:serving:batching:batch_size"
PROCESSED_BATCH_SIZE = ":tensorflow:serving:batching:processed_batch_size_v2"
QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
WRAPPED_RUN_COUNT = ":tensorflow:serving:batching_session:wrapped_run_count"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
MODEL_WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"

# The op_name label TF's batch kernels set; our batching is one scheduler, not a graph op.
BATCHING_OP_NAME = "BatchScheduler"


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """Bucket upper bounds scale * growth**i for i < count, as TF's Buckets::Exponential.

    Args:
        scale: the first bound.
        growth: the factor between bounds.
        count: the number of finite bounds (the +Inf bucket comes on top).
    """
    return [scale * growth**i for i in range(count)]


class _Counter:
    """A monotonically increasing value per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.values: dict[tuple[str, ...], float] = {}

    def add(self, labels: tuple[str, ...], amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def family(self) -> Metric:
        metric = Metric(self.name, self.help, self.kind)
        for labels, value in self.values.items():
            # The sample keeps TF's exact name (prometheus_client would add _total).
            metric.add_sample(self.name, dict(zip(self.label_names, labels, strict=True)), value)
        return metric


class _Histogram:
    """Counts of observations per bucket, with their sum, per label set."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str],
                 bounds: Sequence[float]) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.bounds = list(bounds)
        self.bound_texts = [f"{b:.6g}" for b in self.bounds] + ["+Inf"]
        # per label set: [bucket counts (len(bounds) + 1), sum]
        self.values: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def add(self, labels: tuple[str, ...], value: float) -> None:
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = ([0] * (len(self.bounds) + 1), [0.0])
        entry[0][bisect.bisect_left(self.bounds, value)] += 1
        entry[1][0] += value

    def family(self) -> Metric:
        metric = Metric(self.name, self.help, self.kind)
        for labels, (counts, total) in self.values.items():
            named = dict(zip(self.label_names, labels, strict=True))
            cumulative = 0
            for bound, count in zip(self.bound_texts, counts, strict=True):
                cumulative += count
                metric.add_sample(f"{self.name}_bucket", {**named, "le": bound}, cumulative)
            metric.add_sample(f"{self.name}_sum", named, total[0])
            metric.add_sample(f"{self.name}_count", named, cumulative)
        return metric


class Metrics:
    """The model server's metrics; every method is thread-safe.

    Exported (all latencies in microseconds):
        :tensorflow:serving:request_count{model_name,status}: requests by gRPC status code name.
        :tensorflow:serving:request_latency{model_name,API,entrypoint}: histogram.
        :tensorflow:serving:runtime_latency{model_name,API,runtime}: model run time (histogram).
        :tensorflow:serving:request_example_counts{model}: tf.Examples per classify/regress
            request (histogram, buckets 1 * 2**i); ..._count_total{model} their sum (counter).
        :tensorflow:serving:batching:batch_size{model_name,op_name}: merged batch sizes
            before padding (histogram, TF's buckets 1 * 1.5**i).
        :tensorflow:serving:batching:processed_batch_size_v2{model_name,op_name,batch_size}:
            batches run per size after padding (counter).
        :tensorflow:serving:batching_session:queuing_latency{thread_pool_name}: time requests
            waited for their batch to start (histogram).
        :tensorflow:serving:batching_session:wrapped_run_count: merged batches run (counter).
        :tensorflow:cc:saved_model:load_attempt_count{model_path,status}: loads, "success"/"fail".
        :tensorflow:cc:saved_model:load_latency{model_path}: total load time (counter).
        :tensorflow:serving:model_warmup_latency{model_path,status}: histogram.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        latency_buckets = exponential_buckets(10, 1.8, 33)  # 10 us to ~20 minutes, as TF.
        self._request_count = _Counter(REQUEST_COUNT, "The total number of requests.",
                                       ("model_name", "status"))
        self._request_latency = _Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"), latency_buckets)
        self._runtime_latency = _Histogram(
            RUNTIME_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"), latency_buckets)
        self._example_counts = _Histogram(
            EXAMPLE_COUNTS, "The number of tensorflow.Examples per request.", ("model",),
            exponential_buckets(1, 2, 15))
        self._example_count_total = _Counter(
            EXAMPLE_COUNT_TOTAL, "The total number of tensorflow.Examples.", ("model",))
        self._batch_size = _Histogram(
            BATCH_SIZE, "Tracks the batch size distribution on the batch result by model_name.",
            ("model_name", "op_name"), exponential_buckets(1, 1.5, 20))
        self._processed_batch_size = _Counter(
            PROCESSED_BATCH_SIZE, "Tracks the batch size on processing by model_name and op name.",
            ("model_name", "op_name", "batch_size"))
        self._queuing_latency = _Histogram(
            QUEUING_LATENCY, "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",), exponential_buckets(100, 1.2, 52))
        self._wrapped_run_count = _Counter(
            WRAPPED_RUN_COUNT, "Total count of run calls on the wrapped session", ())
        self._load_attempt_count = _Counter(
            LOAD_ATTEMPT_COUNT, "The number of times a SavedModel was loaded.",
            ("model_path", "status"))
        self._load_latency = _Counter(
            LOAD_LATENCY, "Latency in microseconds for SavedModels that were successfully loaded.",
            ("model_path",))
        self._warmup_latency = _Histogram(
            MODEL_WARMUP_LATENCY,
            "Distribution of wall time (in microseconds) for warming up the model.",
            ("model_path", "status"), latency_buckets)
        self._registry = CollectorRegistry(auto_describe=False)
        self._all = (self._request_count, self._request_latency, self._runtime_latency,
                     self._example_counts, self._example_count_total, self._batch_size,
                     self._processed_batch_size, self._queuing_latency, self._wrapped_run_count,
                     self._load_attempt_count, self._load_latency, self._warmup_latency)
        self._registry.register(_MetricsCollector(self))

    def observe_request(self, model: str, api: str, entrypoint: str, status: str,
                        latency_seconds: float) -> None:
        """Count one finished request.

        Args:
            model: the model name asked for.
            api: TF Serving's API label: "Predict", "Classify", "Regress", "MultiInference",
                "GetModelMetadata" or "GetModelStatus".
            entrypoint: "GRPC" or "REST".
            status: the gRPC status code name of the reply ("OK", "INVALID_ARGUMENT", ...).
            latency_seconds: wall time from receiving the request to replying.
        """
        with self._lock:
            self._request_count.add((model, status))
            self._request_latency.add((model, api, entrypoint), latency_seconds * 1e6)

    def observe_runtime(self, model: str, api: str, runtime: str, latency_seconds: float) -> None:
        """Record one model run's wall time.

        Args:
            model: the model name.
            api: "Predict", "Classify", "Regress" (the request's API).
            runtime: TF's runtime label ("TF1": a SavedModel run as a TF graph).
            latency_seconds: the run's wall time.
        """
        with self._lock:
            self._runtime_latency.add((model, api, runtime), latency_seconds * 1e6)

    def observe_examples(self, model: str, count: int) -> None:
        """Count the tf.Examples of one classify or regress request.

        Args:
            model: the model name.
            count: examples in the request.
        """
        with self._lock:
            self._example_counts.add((model,), count)
            self._example_count_total.add((model,), count)

    def observe_batch(self, model: str, size: int, padded_size: int | None = None) -> None:
        """Count one merged batch run.

        Args:
            model: the model name.
            size: examples in the batch before padding.
            padded_size: the size run after padding to allowed_batch_sizes (default: size).
        """
        with self._lock:
            self._batch_size.add((model, BATCHING_OP_NAME), size)
            self._processed_batch_size.add(
                (model, BATCHING_OP_NAME, str(size if padded_size is None else padded_size)))
            self._wrapped_run_count.add(())

    def observe_queuing(self, thread_pool_name: str, latency_seconds: float) -> None:
        """Record how long one request waited before its batch started running.

        Args:
            thread_pool_name: the batching thread pool's name.
            latency_seconds: the wait.
        """
        with self._lock:
            self._queuing_latency.add((thread_pool_name,), latency_seconds * 1e6)

    def observe_load(self, model: str, version: int, ok: bool, model_path: str | None = None,
                     latency_seconds: float | None = None) -> None:
        """Count one attempt to load a model version.

        Args:
            model: the model name.
            version: the version number.
            ok: whether it loaded.
            model_path: the version's directory (TF's label); default "<model>/<version>".
            latency_seconds: how long a successful load took, if known.
        """
        path = model_path if model_path is not None else f"{model}/{version}"
        with self._lock:
            self._load_attempt_count.add((path, "success" if ok else "fail"))
            if ok and latency_seconds is not None:
                self._load_latency.add((path,), round(latency_seconds * 1e6))

    def observe_warmup(self, model_path: str, status: str, latency_seconds: float) -> None:
        """Record one model warm-up (replaying assets.extra/tf_serving_warmup_requests).

        Args:
            model_path: the version's directory.
            status: the gRPC status code name of the warm-up ("OK" when it worked).
            latency_seconds: its wall time.
        """
        with self._lock:
            self._warmup_latency.add((model_path, status), latency_seconds * 1e6)

    def collect(self) -> Iterator[Metric]:
        """Yield every metric that has samples (prometheus_client's Collector interface)."""
        with self._lock:
            families = [metric.family() for metric in self._all if metric.values]
        yield from families

    def render_prometheus(self) -> str:
        """Return every metric with samples in Prometheus text exposition format 0.0.4."""
        return generate_latest(self._registry).decode("utf-8")


class _MetricsCollector(Collector):
    """Hands a Metrics' families to a prometheus_client registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """Yield the current families."""
        return self.metrics.collect()


# The Content-Type a metrics page is served with.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
