"""Translation end to end on real pairs: overfit through the shared trainer, evaluate, export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from serving_harness import running_server

from app.cli import main
from models.translation_text import standardize
from pipelines.tasks import get_task
from pipelines.tasks.translation import load_split
from pipelines.tasks.translation import test_pairs as load_test_pairs
from pipelines.training.checkpoints import CheckpointStore
from pipelines.training.trainer import train
from serving.export import export_saved_model

PAIRS = 6


@pytest.fixture(scope="module")
def trained(shared_data, tfds_dir, tmp_path_factory):
    """A small model trained until it has learnt the first few training pairs by heart."""
    task = get_task("translation")
    config = task.config("quick", [
        f"max_train_examples={PAIRS}", f"batch_size={PAIRS}", f"max_eval_examples={PAIRS}",
        f"max_validation_examples={PAIRS}",
        "epochs=20", "learning_rate=0.02", "early_stopping_patience=20", "dropout=0",
        "embedding_dim=32", "units=32", "clipnorm=5", "beam_width=3", "samples=2",
        "heatmaps=1"])
    result = train(task, config, tmp_path_factory.mktemp("runs") / "translation")
    # The trainer hands back the best epoch by validation loss, which for memorised training
    # pairs is an early one; the last checkpoint holds what was learnt.
    model = CheckpointStore(result.run_dir).load_model("last")
    pairs = [(ex["es"].decode(), ex["en"].decode())
             for ex in load_split("train", PAIRS).as_numpy_iterator()]
    return task, config, result, model, pairs


def _same_sentence(a: list[str], b: list[str]) -> list[bool]:
    """Equal after standardisation (the model writes lower case, like its training targets)."""
    return (standardize(tf.constant(a)).numpy() == standardize(tf.constant(b)).numpy()).tolist()


def test_overfits_a_few_pairs_with_greedy_and_beam_search(trained):
    task, config, result, model, pairs = trained
    spanish, english = [es for es, _ in pairs], [en for _, en in pairs]
    assert result.history["masked_accuracy"][-1] > 0.99
    for width in (1, 3):
        translations = task.translate_all(model, config, spanish, beam_width=width)
        assert all(_same_sentence(translations, english)), (width, translations, english)


def test_evaluate_reports_bleu_chrf_samples_and_heat_map(trained):
    task, config, result, model, _ = trained
    report = task.evaluate(model, config, result.run_dir)
    json.dumps(report)  # printed as JSON by `rnnkit evaluate`
    pairs = load_test_pairs(PAIRS)
    assert report["test_pairs"] == len(pairs)
    assert 0.0 <= report["bleu"] <= 100.0 and 0.0 <= report["chrf"] <= 100.0
    assert {"greedy", "beam3"} <= set(report)
    assert [s["source"] for s in report["samples"]] == [es for es, _ in pairs[:2]]
    png = result.run_dir / "attention.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    task, config, _, model, _ = trained
    base = tmp_path_factory.mktemp("exports")
    path = export_saved_model(model, task.serving_signatures(model, config), base,
                              task.export_name)
    return base, path


def test_export_loads_and_translates_the_same(trained, exported):
    task, config, _, model, pairs = trained
    base, path = exported
    spanish = [es for es, _ in pairs[:3]]
    assert path == base / "translator" / "1"
    loaded = tf.saved_model.load(str(path))
    served = loaded.signatures["serving_default"](text=tf.constant(spanish))
    expected = task.translate_all(model, config, spanish, config.beam_width)
    assert [t.decode() for t in served["translation"].numpy()] == expected
    # The generic output name of every text-producing model carries the same text.
    assert served["output_text"].numpy().tolist() == served["translation"].numpy().tolist()

    attention = loaded.signatures["translate_with_attention"](text=tf.constant(spanish[:1]))
    weights = attention["attention"].numpy()
    source_tokens = attention["source_tokens"].numpy()[0]
    output_tokens = attention["output_tokens"].numpy()[0]
    assert weights.shape == (1, len(output_tokens), len(source_tokens))
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert attention["translation"].numpy()[0].decode() == expected[0]
    assert output_tokens[-1] == b"[END]"


def test_translate_command_through_the_model_server(trained, exported, tmp_path, capsys):
    task, config, _, model, pairs = trained
    base, _ = exported
    spanish = [es for es, _ in pairs[:2]]
    expected = task.translate_all(model, config, spanish, config.beam_width)
    args = ["--model_name=translator", f"--model_base_path={base / 'translator'}"]
    with running_server(args, tmp_path / "server.log") as server:
        assert main(["translate", *spanish, "--server", f"127.0.0.1:{server.grpc_port}"]) == 0
        reply = json.loads(capsys.readouterr().out)
        assert [t["english"] for t in reply["translations"]] == expected
        assert main(["translate", spanish[0], "--rest", "--attention",
                     "--server", f"127.0.0.1:{server.rest_port}"]) == 0
        reply = json.loads(capsys.readouterr().out)["translations"][0]
        assert reply["english"] == expected[0]
        assert np.asarray(reply["attention"]).shape == (len(reply["output_tokens"]),
                                                        len(reply["source_tokens"]))
    # The server is gone now: one line on stderr, exit code 2.
    assert main(["translate", spanish[0], "--server", f"127.0.0.1:{server.grpc_port}"]) == 2
    error = capsys.readouterr().err.strip()
    assert "not reachable" in error and len(error.splitlines()) == 1
