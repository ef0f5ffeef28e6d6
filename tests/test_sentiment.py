"""IMDB sentiment: the many-to-one and one-to-one models learn on small real subsets, evaluate
with the right metrics, and export a SavedModel that answers like the model in memory."""

from __future__ import annotations

import ast
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from models import layers as ours
from models.sentiment import (
    FirstTokens,
    MaskedMaxPooling,
    TruncateTokens,
    many_to_one,
    standardize_review,
)
from pipelines.datasets import imdb
from pipelines.tasks import get_task
from pipelines.tasks.sentiment import THRESHOLD_FILE
from pipelines.training.binary_metrics import best_threshold, binary_report, roc_auc
from pipelines.training.checkpoints import CheckpointStore
from serving.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SMALL = ["max_train_examples=2000", "max_eval_examples=600", "epochs=2", "batch_size=32",
         "learning_rate=0.005", "max_tokens=5000"]


@pytest.fixture(scope="module")
def reviews(shared_data, tfds_dir):
    """IMDB prepared once into the session's TFDS dir."""
    return imdb.prepare()


@pytest.fixture(scope="module")
def sequence_run(reviews, tmp_path_factory):
    """A small bidirectional GRU trained for two epochs on 2000 real reviews."""
    from pipelines.training.trainer import train

    task = get_task("sentiment")
    config = task.config("quick", [*SMALL, "cell=gru", "units=16", "embedding_dim=32",
                                   "dense_units=16", "max_length=120", "tune_threshold=true"])
    return task, config, train(task, config, tmp_path_factory.mktemp("runs") / "seq")


@pytest.fixture(scope="module")
def bow_run(reviews, tmp_path_factory):
    """The bag-of-words control trained for two epochs on 2000 real reviews."""
    from pipelines.training.trainer import train

    task = get_task("sentiment_bow")
    config = task.config("quick", [*SMALL, "units=32", "dropout=0.2"])
    return task, config, train(task, config, tmp_path_factory.mktemp("runs") / "bow")


def test_standardize_review():
    raw = tf.constant(["Don't WATCH it!<br /><br />Awful\x85 10/10 <BR/>Très BIEN"])
    assert standardize_review(raw).numpy()[0].decode().split() == [
        "dont", "watch", "it", "awful", "10", "10", "très", "bien"]


def test_truncation_keeps_the_start_or_each_reviews_own_end():
    tokens = tf.constant([[5, 6, 7, 8], [9, 3, 0, 0], [4, 0, 0, 0]])
    first = [[5, 6, 7], [9, 3, 0], [4, 0, 0]]
    np.testing.assert_array_equal(TruncateTokens(3)(tokens).numpy(), first)
    np.testing.assert_array_equal(FirstTokens(3)(tokens).numpy(), first)
    # The end of each review, still right-padded: not the batch's padded tail.
    np.testing.assert_array_equal(TruncateTokens(3, "last")(tokens).numpy(),
                                  [[6, 7, 8], [9, 3, 0], [4, 0, 0]])
    np.testing.assert_array_equal(TruncateTokens(2, "last")(tokens).numpy(),
                                  [[7, 8], [9, 3], [4, 0]])
    for keep in ("first", "last"):
        np.testing.assert_array_equal(TruncateTokens(10, keep)(tokens).numpy(), tokens.numpy())
        layer = TruncateTokens.from_config(TruncateTokens(3, keep).get_config())
        assert (layer.max_length, layer.keep) == (3, keep)
    with pytest.raises(ValueError, match="max_length"):
        TruncateTokens(0)
    with pytest.raises(ValueError, match="keep"):
        TruncateTokens(3, "middle")


def test_masked_max_pooling_ignores_padding():
    # Feature values all negative: unmasked padding (zeros) would win the max.
    sequences = tf.constant([[[-3.0, -1.0], [-2.0, -5.0], [0.0, 0.0]],
                             [[-4.0, -6.0], [0.0, 0.0], [0.0, 0.0]],
                             [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = tf.constant([[True, True, False], [True, False, False], [False, False, False]])
    pooled = MaskedMaxPooling()(sequences, mask=mask).numpy()
    np.testing.assert_array_equal(pooled, [[-2.0, -1.0], [-4.0, -6.0], [0.0, 0.0]])
    np.testing.assert_array_equal(MaskedMaxPooling()(sequences).numpy()[0], [0.0, 0.0])


@pytest.mark.parametrize("pooling", ["max", "max_mean"])
def test_pooled_many_to_one_reads_only_the_valid_steps(tmp_path, pooling):
    texts = tf.data.Dataset.from_tensor_slices(["good film", "bad film here"]).batch(2)
    from models.sentiment import make_vectorizer

    model = many_to_one(make_vectorizer(texts, 50), cell="gru", embedding_dim=4, units=3,
                        dense_units=0, pooling=pooling, seed=1)
    assert any(isinstance(layer, MaskedMaxPooling) for layer in model.layers)
    # max_mean puts the max and the mean of the 6 BiGRU features side by side.
    assert model.get_layer("probability").input.shape[-1] == (6 if pooling == "max" else 12)
    # Padding a review's batch with a longer one must not change its probability.
    alone = model(tf.constant(["good film"])).numpy()
    padded = model(tf.constant(["good film", "bad film here good bad"])).numpy()[:1]
    np.testing.assert_allclose(alone, padded, atol=1e-6)
    model.save(tmp_path / "m.keras")
    import keras

    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded(tf.constant(["good film"])).numpy(), alone, atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        many_to_one(make_vectorizer(texts, 50), pooling="mean")


def test_word_dropout_drops_whole_tokens_in_training_only():
    texts = tf.data.Dataset.from_tensor_slices(["good film", "bad film here"]).batch(2)
    from models.sentiment import make_vectorizer

    model = many_to_one(make_vectorizer(texts, 50), embedding_dim=8, units=3, dense_units=0,
                        word_dropout=0.5, seed=3)
    dropped = model.get_layer("word_dropout")(tf.ones([4, 50, 8]), training=True).numpy()
    kept = dropped[:, :, 0] != 0
    # Each token is kept or dropped with all its features, and about half are dropped.
    np.testing.assert_array_equal(dropped != 0, np.repeat(kept[:, :, None], 8, axis=2))
    assert 0.35 < kept.mean() < 0.65
    review = tf.constant(["good film here"])
    np.testing.assert_array_equal(model(review).numpy(), model(review).numpy())
    with pytest.raises(UserError, match="word_dropout"):
        get_task("sentiment").model_on(None, get_task("sentiment").config(
            "quick", ["word_dropout=1.0"]))


def test_roc_auc_matches_counting_pairs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.5 + labels * 0.3, 2)  # overlapping, with ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert roc_auc(labels, scores) == pytest.approx(np.mean(pairs))


def test_binary_report_counts():
    report = binary_report(np.array([1, 1, 0, 0, 1]), np.array([0.9, 0.2, 0.6, 0.1, 0.5]))
    assert report["confusion_matrix"] == [[1, 1], [1, 2]]
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(2 / 3)
    assert report["roc_auc"] == pytest.approx(4 / 6)  # 4 of 6 positive/negative pairs ordered


def test_best_threshold_finds_a_shifted_boundary():
    rng = np.random.default_rng(1)
    # Negatives spread over [0, 0.7), positives over [0.7, 1]: only 0.7 separates them all.
    labels = np.r_[np.zeros(400), np.ones(400)]
    probabilities = np.r_[rng.uniform(0.0, 0.7, 400), rng.uniform(0.7, 1.0, 400)]
    assert best_threshold(labels, probabilities, smoothing=0.0) == pytest.approx(0.7)
    assert binary_report(labels, probabilities, 0.7)["accuracy"] == 1.0
    # A bias the same for every example moves the chosen threshold with it.
    assert best_threshold(labels, probabilities - 0.2, smoothing=0.0) == pytest.approx(0.5)


def test_best_threshold_prefers_a_plateau_and_then_one_half():
    # Accuracy is flat for every threshold between the classes: the tie goes to 0.5.
    labels = np.array([0, 0, 1, 1])
    assert best_threshold(labels, np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(0.5)
    # Accuracy is 43/45 for thresholds 0.06-0.16 (a narrow peak: three positives at 0.16 are
    # right, two negatives at 0.30 wrong), 40/45 for 0.17-0.30 and 42/45 for 0.31-0.95.
    labels = np.r_[np.zeros(20), np.ones(20), np.ones(3), np.zeros(2)]
    probabilities = np.r_[np.full(20, 0.05), np.full(20, 0.96), np.full(3, 0.16), 0.3, 0.3]
    assert best_threshold(labels, probabilities, smoothing=0.0) == pytest.approx(0.16)
    # Averaged over +-0.1 the peak sinks below the broad plateau, whose middle is 0.5.
    assert best_threshold(labels, probabilities, smoothing=0.1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        best_threshold(np.array([1]), np.array([0.2, 0.3]))


def test_many_to_one_learns(sequence_run):
    task, config, result = sequence_run
    report = task.evaluate(result.model, config, result.run_dir)
    assert report["n_examples"] == 600
    assert sum(map(sum, report["confusion_matrix"])) == 600
    assert report["accuracy"] > 0.62, report
    assert report["roc_auc"] > 0.7, report
    # The threshold was chosen on validation, recorded for the best epoch, and applied to test.
    chosen = json.loads((result.run_dir / THRESHOLD_FILE).read_text())
    assert chosen["epoch"] == CheckpointStore(result.run_dir).state()["best_epoch"]
    _, validation = imdb.train_validation(config.validation_fraction, config.seed,
                                          config.max_train_examples)
    assert chosen["n_examples"] == sum(1 for _ in validation)  # about 10% of 2000 reviews
    assert 0.05 <= chosen["threshold"] <= 0.95
    assert report["threshold"] == chosen["threshold"]
    _, probabilities = task.predict_test(result.model, config)
    assert report["confusion_matrix"][0][1] + report["confusion_matrix"][1][1] == np.sum(
        probabilities >= chosen["threshold"])
    assert "accuracy_at_0.5" in report
    untuned = task.evaluate(result.model, config.replace(tune_threshold=False), result.run_dir)
    assert untuned["threshold"] == 0.5
    assert untuned["accuracy"] == report["accuracy_at_0.5"]
    bidirectional = [layer for layer in result.model.layers
                     if isinstance(layer, ours.Bidirectional)]
    assert len(bidirectional) == 1
    assert isinstance(bidirectional[0].forward_layer, ours.GRU)


def test_one_to_one_learns_and_runs_the_cell_once(bow_run):
    task, config, result = bow_run
    report = task.evaluate(result.model, config, result.run_dir)
    assert report["accuracy"] > 0.7, report
    recurrent = [layer for layer in result.model.layers if isinstance(layer, ours.LSTM)]
    assert len(recurrent) == 1
    assert tuple(recurrent[0].input.shape)[1] == 1  # a sequence of exactly one step


def _dotted(node: ast.AST) -> str:
    """`keras.layers.LSTM` for the expression keras.layers.LSTM, '' for anything else."""
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return node.id if isinstance(node, ast.Name) else ""


def test_no_keras_recurrent_layers_in_models_or_pipelines():
    banned = {"LSTM", "GRU", "SimpleRNN", "Bidirectional", "RNN", "LSTMCell", "GRUCell",
              "SimpleRNNCell", "StackedRNNCells", "ConvLSTM1D", "ConvLSTM2D"}
    for path in itertools.chain((REPO / "models").rglob("*.py"),
                                (REPO / "pipelines").rglob("*.py")):
        used = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in banned:
                name = _dotted(node)
                if name.startswith(("keras.", "tf.keras.")) and ".layers." in name:
                    used.append(name)
            elif isinstance(node, ast.ImportFrom) and "keras" in (node.module or ""):
                used += [f"{node.module}.{a.name}" for a in node.names if a.name in banned]
        assert not used, f"{path} uses Keras's recurrent layers: {used}"


def test_bad_settings_are_user_errors(reviews):
    task = get_task("sentiment")
    with pytest.raises(UserError, match="cell"):
        task.build_model(task.config("quick", ["cell=transformer"]))
    bow = get_task("sentiment_bow")
    with pytest.raises(UserError, match=r"dropout=1\.0 is not a dropout rate"):
        bow.build_model(bow.config("quick", ["dropout=1.0"]))
    with pytest.raises(UserError, match="output_mode"):
        get_task("sentiment_bow").datasets(get_task("sentiment_bow").config(
            "quick", ["output_mode=int"]))


def test_export_answers_like_the_model(sequence_run, tmp_path):
    from pipelines.training.export import export_run
    from serving.export import CLASSIFY_METHOD

    task, _, result = sequence_run
    texts = tf.constant([t for t, _ in imdb.load_test(24).as_numpy_iterator()])
    expected = result.model(texts, training=False).numpy().ravel()
    # A recorded threshold splitting these reviews in half must decide the exported labels.
    run_dir = tmp_path / "run"
    shutil.copytree(result.run_dir, run_dir)
    threshold = float(np.median(expected))
    (run_dir / THRESHOLD_FILE).write_text(json.dumps(
        {"threshold": threshold, "epoch": CheckpointStore(run_dir).state()["best_epoch"]}))
    path = export_run(task, run_dir, tmp_path)
    assert path == tmp_path / "sentiment" / "1"

    loaded = tf.saved_model.load(str(path))
    predict = loaded.signatures["serving_default"]
    assert set(predict.structured_input_signature[1]) == {"text"}
    out = predict(text=texts)
    np.testing.assert_allclose(out["probability"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               np.stack([1 - expected, expected], axis=1), atol=1e-5)
    labels = [b.decode() for b in out["label"].numpy()]
    assert labels == ["positive" if p >= threshold else "negative" for p in expected]
    assert labels.count("positive") == 12

    examples = [tf.train.Example(features=tf.train.Features(feature={
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t]))})).SerializeToString()
        for t in texts.numpy()]
    classified = loaded.signatures["classify"](inputs=tf.constant(examples))
    np.testing.assert_allclose(classified["scores"].numpy(),
                               np.stack([1 - expected, expected], axis=1), atol=1e-5)
    assert classified["classes"].numpy()[0].tolist() == [b"negative", b"positive"]

    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    assert saved.meta_graphs[0].signature_def["classify"].method_name == CLASSIFY_METHOD

    warmup = path / "assets.extra" / "tf_serving_warmup_requests"
    for record in tf.data.TFRecordDataset(str(warmup)):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        replies = predict(text=tf.constant(tf.make_ndarray(request.inputs["text"])))
        assert replies["probability"].shape[0] >= 1
    provenance = json.loads((path / "assets.extra" / "rnnkit_export.json").read_text())
    assert provenance["run_dir"] == str(run_dir.resolve())


def test_self_training_adds_the_teachers_answers(sequence_run, bow_run):
    from pipelines.tasks import self_training

    task = get_task("sentiment")
    teachers = [sequence_run[2].run_dir, bow_run[2].run_dir]
    distill = task.config("quick", [*SMALL, f"teachers={teachers[0]}, {teachers[1]}"])
    config = distill.replace(pseudo_label_confidence=0.7, soft_labels=False)
    # The teachers' mean answer computed here directly, in split order and unbucketed.
    texts = [t for t in imdb.unlabelled_texts(2000).unbatch().as_numpy_iterator()]
    mean = np.mean([CheckpointStore(run).load_model("best")(tf.constant(texts), training=False)
                    .numpy().ravel() for run in teachers], axis=0)
    confident = (mean >= 0.7) | (mean <= 0.3)
    assert 0 < confident.sum() < len(texts)  # some reviews are kept, some are not

    pseudo = list(self_training.pseudo_labelled(config, task.registry).as_numpy_iterator())
    assert [text for text, _ in pseudo] == [t for t, keep in zip(texts, confident, strict=True)
                                            if keep]
    labels = np.array([label[0] for _, label in pseudo])
    np.testing.assert_array_equal(labels, (mean[confident] >= 0.5).astype(np.float32))
    # By default (distillation) every review, labelled with the teachers' mean probability.
    soft = list(self_training.pseudo_labelled(distill, task.registry).as_numpy_iterator())
    assert [text for text, _ in soft] == texts
    np.testing.assert_allclose([label[0] for _, label in soft], mean, atol=1e-5)

    # The student trains on its labelled reviews and the pseudo-labelled ones, and validates on
    # labelled reviews only.
    train, validation = task.datasets(config)
    labelled, held_out = imdb.train_validation(config.validation_fraction, config.seed, 2000)
    assert sum(int(x.shape[0]) for x, _ in train) == sum(1 for _ in labelled) + len(pseudo)
    assert sum(int(x.shape[0]) for x, _ in validation) == sum(1 for _ in held_out)


def test_self_training_refuses_unusable_teachers(sequence_run, tmp_path):
    task = get_task("sentiment")
    with pytest.raises(UserError, match="is not a trained IMDB run"):
        task.datasets(task.config("quick", [*SMALL, f"teachers={tmp_path / 'missing'}"]))
    # A teacher that held out other validation reviews has learned from this run's.
    with pytest.raises(UserError, match="held out other validation reviews"):
        task.datasets(task.config("quick", [*SMALL, "seed=7",
                                            f"teachers={sequence_run[2].run_dir}"]))
    with pytest.raises(UserError, match=r"pseudo_label_confidence=1\.0 is not a confidence"):
        task.datasets(task.config("quick", ["pseudo_label_confidence=1.0"]))


def test_training_metrics_count_soft_labels_by_their_side_of_one_half():
    task = get_task("sentiment")
    accuracy, auc = task.metrics(task.config("quick"))
    labels = tf.constant([[0.7], [0.2], [0.55], [0.4]])  # teachers' probabilities
    predictions = tf.constant([[0.9], [0.1], [0.3], [0.6]])
    accuracy.update_state(labels, predictions)
    assert float(accuracy.result()) == 0.5
    auc.update_state(labels, predictions)
    assert float(auc.result()) == pytest.approx(0.75)  # 3 of 4 positive-negative pairs in order
