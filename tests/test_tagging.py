"""`tag` on a user's files: a tiny seeded run on real UD English EWT sentences written to CoNLL
and JSONL (validated on the real .conllu file) learns well above the majority tag, evaluates,
exports and answers text and pre-tokenised tokens with tag names; bad input is one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from task_runs import quick_run

from pipelines.datasets import ud_english
from pipelines.tasks import get_task
from serving.errors import UserError

SMALL = ["epochs=3", "batch_size=32", "learning_rate=0.004", "embedding_dim=32", "units=32",
         "char_filters=24", "char_dim=16", "max_train_examples=1500"]


@pytest.fixture(scope="module")
def sentences(shared_data, tmp_path_factory):
    """1,500 training sentences as a tab-separated CoNLL file (token, lemma, tag), 300 test
    sentences as JSONL."""
    folder = tmp_path_factory.mktemp("sentences")
    with open(folder / "train.conll", "w", encoding="utf-8") as out:
        for i, (_, s) in enumerate(ud_english.rows("train")):
            if i == 1500:
                break
            out.write("".join(f"{t}\t{t.lower()}\t{g}\n" for t, g in zip(s["tokens"], s["tags"],
                                                                         strict=True)) + "\n")
    with open(folder / "test.jsonl", "w", encoding="utf-8") as out:
        for i, (_, s) in enumerate(ud_english.rows("test")):
            if i == 300:
                break
            out.write(json.dumps({"tokens": s["tokens"], "tags": s["tags"]}) + "\n")
    return folder


@pytest.fixture(scope="module")
def tag_run(sentences, shared_data, tmp_path_factory):
    return quick_run("tag", [
        f"data={sentences / 'train.conll'}",
        f"validation_data={ud_english.split_file('validation')}",
        f"test_data={sentences / 'test.jsonl'}", "cell=gru", *SMALL],
        tmp_path_factory.mktemp("runs") / "tag")


def test_tagger_learns_evaluates_and_exports_tag_names(tag_run, tmp_path):
    from pipelines.training.evaluation import evaluate_run
    from pipelines.training.export import export_run

    task, _, result = tag_run
    evaluation = evaluate_run(task, result.run_dir)
    assert evaluation["n_sentences"] == 300
    # The most frequent tag covers about a sixth of the tokens.
    assert evaluation["accuracy"] > evaluation["majority_baseline"] + 0.45, evaluation
    assert len(evaluation["per_class"]) == 17 and 0 < evaluation["macro_f1"] <= 1
    assert np.sum(evaluation["confusion_matrix"]) == evaluation["n_tokens"]
    assert (result.run_dir / evaluation["confusion_matrix_png"]).is_file()

    path = export_run(task, result.run_dir, tmp_path / "exports")
    meta = json.loads((path / "assets.extra" / "rnnkit_export.json").read_text())
    assert meta["kind"] == "tag" and "NOUN" in meta["tags"]
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serving_default"](text=tf.constant(
        ["The dog barked .", "She will go to Paris tomorrow"]))
    tokens = out["tokens"].numpy().astype(str).tolist()
    tags = out["tags"].numpy().astype(str).tolist()
    # Whitespace tokens, padded with "" to the longest text of the batch.
    assert tokens == [["The", "dog", "barked", ".", "", ""],
                      ["She", "will", "go", "to", "Paris", "tomorrow"]]
    assert tags[0][4:] == ["", ""] and all(t in meta["tags"] for t in tags[1])
    assert tags[0][3] == "PUNCT" and tags[0][0] == "DET"
    empty = loaded.signatures["serving_default"](text=tf.constant(["", "  "]))
    assert empty["tags"].numpy().astype(str).tolist() == [[""], [""]]
    by_tokens = loaded.signatures["tag_tokens"](tokens=tf.constant(
        [["The", "dog", "barked", ".", ""]]))
    assert by_tokens["tags"].numpy().astype(str).tolist()[0] == tags[0][:5]
    # Issue 24: bounded work. A 200,000-word text is cut to max_input_tokens in the graph, a
    # 1 MB token is read up to max_token_chars, too many texts are refused in one sentence.
    limit, most = meta["max_input_tokens"], meta["max_request_texts"]
    assert (limit, most, meta["max_token_chars"]) == (512, 64, 64)
    long = loaded.signatures["serving_default"](text=tf.constant(["The dog barked . " * 50_000]))
    assert long["tags"].shape == (1, limit)
    assert long["tags"].numpy().astype(str).tolist()[0][:4] == tags[0][:4]
    huge = loaded.signatures["tag_tokens"](tokens=tf.constant([["x" * 1_000_000, "."]]))
    assert huge["tags"].numpy().astype(str).tolist()[0][1] == "PUNCT"
    assert len(huge["tokens"].numpy()[0][0]) == 1_000_000  # returned whole
    # The text beyond 32 characters per allowed token is not read.
    cut = loaded.signatures["serving_default"](text=tf.constant(["x" * 1_000_000 + " ."]))
    assert cut["tokens"].shape == (1, 1) and len(cut["tokens"].numpy()[0][0]) == 32 * limit
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at most {most} are read"):
        loaded.signatures["serving_default"](text=tf.constant(["a ."] * (most + 1)))
    # An empty batch answers an empty batch (the character features lost their time axis).
    assert loaded.signatures["serving_default"](text=tf.constant([], tf.string))[
        "tags"].shape[0] == 0
    assert loaded.signatures["tag_tokens"](tokens=tf.zeros([0, 3], tf.string))[
        "tags"].shape == (0, 3)


def write_conll(path, sentences):
    path.write_text("\n".join("".join(f"{t} {g}\n" for t, g in s) for s in sentences))
    return path


def test_bad_tagging_data_is_one_clear_error(tmp_path, shared_data):
    task = get_task("tag")
    with pytest.raises(UserError, match=r"data set 'trec' is for classify tasks, not tag"):
        task.datasets(task.config("quick", ["data=trec"]))
    one_tag = write_conll(tmp_path / "one.conll", [[("a", "X"), ("b", "X")]])
    with pytest.raises(UserError, match=r"has 1 tag \('X'\); a tagger needs at least two"):
        task.datasets(task.config("quick", [f"data={one_tag}", "validation_fraction=0.01"]))
    train = write_conll(tmp_path / "train.conll", [[("a", "X"), ("b", "Y")]])
    val = write_conll(tmp_path / "val.conll", [[("a", "X"), ("b", "Z"), ("c", "Z")]])
    with pytest.raises(UserError, match=r"val.conll has tags never seen in training: 'Z' "
                                        r"\(2 tokens\)"):
        task.datasets(task.config("quick", [f"data={train}", f"validation_data={val}"]))
    ragged = tmp_path / "ragged.conll"
    ragged.write_text("a X\nb Y\n\nc\n")
    with pytest.raises(UserError, match=r"ragged.conll, line 4"):
        task.datasets(task.config("quick", [f"data={ragged}", f"validation_data={val}"]))


def test_unknown_word_dropout_only_in_training():
    from models.unknown_words import UnknownWordDropout

    layer = UnknownWordDropout(0.3, seed=1)
    ids = tf.constant([[5, 7, 9, 2, 1, 0, 0]] * 500, dtype=tf.int64)
    assert np.array_equal(layer(ids, training=False).numpy(), ids.numpy())
    dropped = layer(ids, training=True).numpy()
    assert np.all(dropped[:, 5:] == 0) and np.all(dropped[:, 4] == 1)  # padding, unknown stay
    replaced = np.mean(dropped[:, :4] == 1)
    assert 0.25 < replaced < 0.35
    assert UnknownWordDropout.from_config(layer.get_config()).rate == 0.3


def test_padding_stays_masked_beside_character_features():
    """A sentence gets the same tags alone and in a batch beside a longer one: the character
    features carry no mask of their own, and the word mask must still cover the padding (with
    Keras's Concatenate the backward layer read the padding as tokens)."""
    import keras

    from models.tagging import tagger

    keras.utils.set_random_seed(3)
    model = tagger(["the", "cat", "sat"], list("thecasx"), ["DET", "NOUN", "VERB"],
                   embedding_dim=8, char_dim=4, char_filters=6, units=8)
    alone = model(tf.constant([["the", "cat", "sat"]])).numpy()
    padded = model(tf.constant([["the", "cat", "sat", "", "", ""],
                                ["the", "cat", "sat", "on", "the", "mat"]])).numpy()
    np.testing.assert_allclose(padded[0, :3], alone[0], atol=1e-6)
