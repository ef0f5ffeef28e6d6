"""The one export function: TF Serving layout, versions, atomicity, signatures, warm-up file."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving.export import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    existing_versions,
    export_saved_model,
    predict_log,
    warmup_file,
)


class Doubler(tf.Module):
    """y = w * x with one variable, the smallest thing worth exporting."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def double(self, x):
        return {"y": self.w * x}


def _method_names(version_dir) -> dict[str, str]:
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    return {k: v.method_name for k, v in saved.meta_graphs[0].signature_def.items()
            if not k.startswith("__")}  # __saved_model_init_op is TF's own


def test_versions_increase_and_reload(tmp_path):
    module = Doubler()
    first = export_saved_model(module, {"serving_default": module.double}, tmp_path, "doubler")
    module.w.assign(3.0)
    second = export_saved_model(module, {"serving_default": module.double}, tmp_path, "doubler")
    assert (first.name, second.name) == ("1", "2")
    assert existing_versions(tmp_path / "doubler") == [1, 2]
    for version, factor in ((first, 2.0), (second, 3.0)):
        loaded = tf.saved_model.load(str(version))
        y = loaded.signatures["serving_default"](x=tf.constant([1.0, 4.0]))["y"]
        np.testing.assert_allclose(y.numpy(), [factor, 4 * factor])
    # Only integer version folders remain: no temporary folder is left behind.
    assert sorted(p.name for p in (tmp_path / "doubler").iterdir()) == ["1", "2"]


def test_next_version_follows_the_highest_and_never_overwrites(tmp_path):
    module = Doubler()
    (tmp_path / "doubler" / "7").mkdir(parents=True)
    (tmp_path / "doubler" / "7" / "keep.txt").write_text("old")
    (tmp_path / "doubler" / "notes").mkdir()
    path = export_saved_model(module, {"serving_default": module.double}, tmp_path, "doubler")
    assert path.name == "8"
    assert (tmp_path / "doubler" / "7" / "keep.txt").read_text() == "old"


def test_failed_export_leaves_nothing(tmp_path):
    module = Doubler()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def broken(x):
        raise RuntimeError("cannot trace")

    with pytest.raises(RuntimeError, match="cannot trace"):
        export_saved_model(module, {"serving_default": broken}, tmp_path, "doubler")
    assert list((tmp_path / "doubler").iterdir()) == []


def test_method_names_and_assets_extra(tmp_path):
    module = Doubler()
    logs = [predict_log({"x": np.array([1.0, 2.0], np.float32)}, model_name="doubler"),
            predict_log({"x": np.array([5.0], np.float32)})]
    path = export_saved_model(
        module, {"serving_default": module.double, "classify": module.double}, tmp_path,
        "doubler", assets_extra={"tf_serving_warmup_requests": warmup_file(logs)},
        method_names={"classify": CLASSIFY_METHOD})
    assert _method_names(path) == {"serving_default": PREDICT_METHOD,
                                   "classify": CLASSIFY_METHOD}
    # The rewritten graph still loads and runs.
    loaded = tf.saved_model.load(str(path))
    assert loaded.signatures["classify"](x=tf.constant([1.5]))["y"].numpy().tolist() == [3.0]
    records = list(tf.data.TFRecordDataset(str(path / "assets.extra" /
                                               "tf_serving_warmup_requests")))
    assert len(records) == 2
    parsed = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    request = parsed.predict_log.request
    assert request.model_spec.name == "doubler"
    assert request.model_spec.signature_name == "serving_default"
    np.testing.assert_allclose(tf.make_ndarray(request.inputs["x"]), [1.0, 2.0])


def test_bad_arguments(tmp_path):
    module = Doubler()
    with pytest.raises(ValueError, match="model name"):
        export_saved_model(module, {"serving_default": module.double}, tmp_path, "../x")
    with pytest.raises(ValueError, match="at least one signature"):
        export_saved_model(module, {}, tmp_path, "doubler")
    with pytest.raises(ValueError, match="not exported"):
        export_saved_model(module, {"serving_default": module.double}, tmp_path, "doubler",
                           method_names={"classify": CLASSIFY_METHOD})
    assert list((tmp_path / "doubler").iterdir()) == []
