"""TF Serving's text-format config files: model config, batching and monitoring parameters."""

from __future__ import annotations

import dataclasses
import os

import pytest

from serving.config_readers import (
    BatchingParameters,
    load_batching_parameters,
    load_model_server_config,
    load_monitoring_config,
)
from serving.errors import UserError

# The examples of TF Serving's configuration guide (serving_config.md), written the same way.
MODEL_CONFIG = """\
model_config_list {
  config {
    name: 'my_first_model'
    base_path: '/tmp/my_first_model/'
    model_platform: 'tensorflow'
  }
  config {
    name: 'my_second_model'
    base_path: '/tmp/my_second_model/'
    model_platform: 'tensorflow'
    model_version_policy {
      specific {
        versions: 42
        versions: 43
      }
    }
    version_labels {
      key: 'stable'
      value: 42
    }
    version_labels {
      key: 'canary'
      value: 43
    }
  }
}
"""
BATCHING = """\
max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
"""
MONITORING = """\
prometheus_config {
  enable: true,
  path: "/monitoring/prometheus/metrics"
}
"""


def write(tmp_path, text, name="config.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_tf_serving_guide_model_config_parses(tmp_path):
    config = load_model_server_config(write(tmp_path, MODEL_CONFIG))
    models = config.model_config_list.config
    assert [m.name for m in models] == ["my_first_model", "my_second_model"]
    assert models[0].base_path == "/tmp/my_first_model/"
    assert list(models[1].model_version_policy.specific.versions) == [42, 43]
    assert dict(models[1].version_labels) == {"stable": 42, "canary": 43}


def test_model_config_syntax_error_names_file_line_and_column(tmp_path):
    broken = MODEL_CONFIG.replace("base_path: '/tmp/my_second_model/'",
                                  "base_path '/tmp/my_second_model/'")
    path = write(tmp_path, broken, "models.config")
    with pytest.raises(UserError) as info:
        load_model_server_config(path)
    message = str(info.value)
    assert f"{path}:9:" in message
    assert "models.config" in message


def test_model_config_unknown_field_is_reported(tmp_path):
    path = write(tmp_path, MODEL_CONFIG.replace("model_platform: 'tensorflow'\n  }\n  config",
                                                "model_platfrom: 'tensorflow'\n  }\n  config"))
    with pytest.raises(UserError, match=r':5:\d+: .*no field named "model_platfrom"'):
        load_model_server_config(path)


def test_missing_model_config_file(tmp_path):
    with pytest.raises(UserError, match=r"missing\.config does not exist"):
        load_model_server_config(tmp_path / "missing.config")


def test_batching_parameters_from_the_guide(tmp_path):
    params = load_batching_parameters(write(tmp_path, BATCHING))
    assert (params.max_batch_size, params.batch_timeout_micros, params.max_enqueued_batches,
            params.num_batch_threads) == (128, 0, 1000000, 8)
    assert params.allowed_batch_sizes == []
    assert params.pad_variable_length_inputs is False


def test_batching_parameters_every_field(tmp_path):
    text = ("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2500 }\n"
            "thread_pool_name { value: 'pool' }\n"
            "allowed_batch_sizes: 2\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
            "pad_variable_length_inputs: true\n")
    params = load_batching_parameters(write(tmp_path, text))
    assert params.allowed_batch_sizes == [2, 4, 8]
    assert params.pad_variable_length_inputs is True
    assert params.thread_pool_name == "pool"
    assert params.batch_timeout_micros == 2500
    # Unset fields keep TF Serving's BasicBatchScheduler defaults.
    assert params.max_enqueued_batches == 10
    assert params.num_batch_threads == (os.cpu_count() or 1)


def test_batching_parameters_every_field_of_tf_serving_221_parses(tmp_path):
    text = ("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 100 }\n"
            "max_enqueued_batches { value: 5 }\nnum_batch_threads { value: 2 }\n"
            "thread_pool_name { value: 'pool' }\n"
            "enable_large_batch_splitting { value: true }\n"
            "max_execution_batch_size { value: 16 }\n"
            "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\n"
            "pad_variable_length_inputs: true\n"
            "low_priority_max_batch_size { value: 32 }\n"
            "low_priority_batch_timeout_micros { value: 1000 }\n"
            "low_priority_max_enqueued_batches { value: 3 }\n"
            "low_priority_allowed_batch_sizes: 32\n"
            "mixed_priority_batching_policy: 'low_priority_padding_with_max_batch_size'\n"
            "batch_padding_policy: 'PAD_UP'\n")
    params = load_batching_parameters(write(tmp_path, text))
    assert params.enable_large_batch_splitting is True
    assert (params.max_batch_size, params.max_execution_batch_size,
            params.execution_batch_size) == (64, 16, 16)
    assert params.allowed_batch_sizes == [8, 16]
    # The low-priority queue and the policies parse; they mean nothing to our one queue.
    assert params.unused_fields == [
        "low_priority_max_batch_size", "low_priority_batch_timeout_micros",
        "low_priority_max_enqueued_batches", "low_priority_allowed_batch_sizes",
        "mixed_priority_batching_policy", "batch_padding_policy"]


def test_batching_defaults_without_a_file():
    params = load_batching_parameters(None)
    assert params == BatchingParameters()
    assert (params.max_batch_size, params.batch_timeout_micros, params.max_enqueued_batches) == (
        1000, 0, 10)


@pytest.mark.parametrize("text, pattern", [
    ("max_batch_size: 128\n", r":1:\d+: .*"),                      # not the wrapper form
    ("max_batch_size { value: 128 }\nbatch_timout_micros { value: 1 }\n",
     r':2:1: .*no field named "batch_timout_micros"'),
    ("max_batch_size { value: 'many' }\n", r":1:\d+: .*"),
    ("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n", "must equal max_batch_size"),
    ("num_batch_threads { value: 0 }\n", "num_batch_threads must be >= 1"),
])
def test_batching_parameter_errors(tmp_path, text, pattern):
    with pytest.raises(UserError, match=pattern) as info:
        load_batching_parameters(write(tmp_path, text, "batching.config"))
    assert "batching.config" in str(info.value)


def test_monitoring_config_from_the_guide(tmp_path):
    config = load_monitoring_config(write(tmp_path, MONITORING))
    assert config.enable is True
    assert config.path == "/monitoring/prometheus/metrics"


def test_monitoring_defaults_and_errors(tmp_path):
    assert load_monitoring_config(None).enable is False
    config = load_monitoring_config(write(tmp_path, "prometheus_config { enable: true }"))
    assert config.path == "/monitoring/prometheus/metrics"
    with pytest.raises(UserError, match="must start with /"):
        load_monitoring_config(write(tmp_path, "prometheus_config { enable: true path: 'x' }"))
    with pytest.raises(UserError, match=r":1:\d+"):
        load_monitoring_config(write(tmp_path, "prometheus_config { enable: maybe }"))


@pytest.mark.parametrize("path", ["/v1/models/m", "/V1/x", "/healthz", "/readyz"])
def test_a_metrics_path_the_rest_api_answers_itself_is_refused_at_start(tmp_path, path):
    """Such a page would never be reached: the REST API answers the path first."""
    from serving.model_server import ModelServer, ServerOptions

    monitoring = write(tmp_path, f'prometheus_config {{ enable: true path: "{path}" }}')
    options = ServerOptions(model_name="m", model_base_path=str(tmp_path),
                            monitoring_config_file=monitoring)
    with pytest.raises(UserError, match=f"path '{path}' is the REST API's own"):
        ModelServer(options)
    # Off, the path is never served, so it is no conflict.
    off = write(tmp_path, f'prometheus_config {{ enable: false path: "{path}" }}', "off.txt")
    ModelServer(dataclasses.replace(options, monitoring_config_file=off))


def test_a_base_path_that_is_a_version_folder_names_the_folder_above(tmp_path):
    """--model_base_path=exports/m/1 (one version, not the model) says which folder to give."""
    from tensorflow_serving.config import model_server_config_pb2

    from serving.model_manager import _scan_problem, scan_versions

    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    policy = model_server_config_pb2.ModelConfig().model_version_policy  # latest 1
    problem = _scan_problem(version, scan_versions(version), policy)
    assert "it is itself version 1 of a model" in problem and str(tmp_path / "m") in problem
    assert "itself" not in _scan_problem(tmp_path / "m", {}, policy)


def test_version_folders_are_names_tf_serving_reads_as_int64(tmp_path):
    """A folder named beyond int64 (or with non-ASCII digits) is no version: it broke model
    status (`Value out of range`) and the exporter's next version (`int('²')`)."""
    from serving.export import existing_versions
    from serving.model_manager import scan_versions
    from serving.models_config_writer import exported_models

    for name in ("1", "007", "99999999999999999999999", "²", "١", "v3"):
        (tmp_path / "m" / name).mkdir(parents=True)
        (tmp_path / "m" / name / "saved_model.pb").write_bytes(b"")
    assert sorted(scan_versions(tmp_path / "m")) == [1, 7]
    assert existing_versions(tmp_path / "m") == [1, 7]
    assert exported_models(tmp_path) == {"m": [1, 7]}
