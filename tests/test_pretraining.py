"""`encoder_from`: a classifier started from a language model trained on the same text gets its
word vectors row by row by word and its recurrent layer; gradual unfreezing keeps pretrained
layers still until their epoch; every mismatch between the two runs is one clear error."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from pipelines.datasets import trec
from pipelines.tasks import get_task
from serving.errors import UserError

LM = ["epochs=1", "batch_size=8", "tbptt_steps=10", "layers=1", "embedding_dim=16", "units=16",
      "max_tokens=3000", "dropout=0.0", "embedding_dropout=0.0", "tokenize=lower_punct"]
CLASSIFIER = ["epochs=1", "batch_size=32", "max_tokens=1500", "embedding_dim=16", "units=16",
              "dense_units=16", "max_length=30", "layers=1"]


@pytest.fixture(scope="module")
def questions(shared_data, tmp_path_factory):
    """1,000 TREC training questions as CSV (the classifier's labels and the LM's text)."""
    path = tmp_path_factory.mktemp("questions") / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i, (_, row) in enumerate(trec.rows("train")):
            if i == 1000:
                break
            writer.writerow([row["text"], row["label"]])
    return path


@pytest.fixture(scope="module")
def language_model_run(questions, tmp_path_factory):
    from pipelines.training.trainer import train

    task = get_task("language_model")
    config = task.config("quick", [f"data={questions}", *LM])
    return train(task, config, tmp_path_factory.mktemp("runs") / "lm").run_dir


def classifier_config(questions, run_dir, *more):
    return get_task("classify").config("quick", [f"data={questions}", *CLASSIFIER,
                                                 f"encoder_from={run_dir}", *more])


def _classifier_form(word: str) -> list[str]:
    """The classifier's tokens of one word (models.sentiment.standardize_review, ASCII words)."""
    return re.sub(r"[\W_]+", " ", re.sub("['’]", "", word.lower())).split()


def test_classifier_starts_from_the_language_models_vectors_and_layer(questions,
                                                                      language_model_run):
    from models.language_model import recurrent, vocabulary
    from pipelines.training.pretraining import load_language_model

    task = get_task("classify")
    model = task.build_model(classifier_config(questions, language_model_run))
    lm = load_language_model(str(language_model_run))
    lm_vectors = lm.get_layer("embedding").embeddings.numpy()
    # Each classifier word starts from the most frequent (lowest) language-model row that the
    # classifier's tokenizer reads as that word: "'s" (kept whole by tokenize=lower_punct)
    # starts the classifier's "s".
    expected: dict[str, int] = {}
    for row, word in enumerate(vocabulary(lm)[2:], start=2):
        form = _classifier_form(word)
        if word.isascii() and len(form) == 1:
            expected.setdefault(form[0], row)
    words = model.get_layer("vectorizer").get_vocabulary()
    vectors = model.get_layer("embedding").embeddings.numpy()
    started = [(i, expected[word]) for i, word in enumerate(words) if word in expected]
    assert len(started) > 0.9 * len(words), "the two runs read the same questions"
    for i, row in started:
        np.testing.assert_array_equal(vectors[i], lm_vectors[row], err_msg=words[i])
    assert vocabulary(lm)[expected["s"]] == "'s"
    np.testing.assert_array_equal(vectors[words.index("s")], lm_vectors[expected["s"]])
    np.testing.assert_array_equal(vectors[words.index("[UNK]")], lm_vectors[0])
    forward = model.get_layer("bidirectional_1").forward_layer
    backward = model.get_layer("bidirectional_1").backward_layer
    for mine, theirs in zip(forward.get_weights(), recurrent(lm)[0].get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    # The backward half reads the other way, which the language model never learned.
    assert not np.array_equal(backward.get_weights()[0], forward.get_weights()[0])


def test_gradual_unfreezing_keeps_pretrained_layers_still_until_their_epoch(
        questions, language_model_run, tmp_path):
    from pipelines.training.pretraining import load_language_model
    from pipelines.training.trainer import train

    lm = load_language_model(str(language_model_run))
    lm_kernel = lm.get_layer("rnn_0").get_weights()[0]
    lm_vectors = lm.get_layer("embedding").embeddings.numpy()
    task = get_task("classify")

    def trained(epochs: int):
        config = classifier_config(questions, language_model_run, f"epochs={epochs}",
                                   "gradual_unfreezing=true", "early_stopping_patience=5")
        from pipelines.training.checkpoints import CheckpointStore

        run = train(task, config, tmp_path / f"e{epochs}").run_dir
        return CheckpointStore(run).load_model("last")

    one = trained(1)  # epoch 1: only the new layers train
    np.testing.assert_array_equal(
        one.get_layer("bidirectional_1").forward_layer.get_weights()[0], lm_kernel)
    assert not np.array_equal(
        one.get_layer("bidirectional_1").backward_layer.get_weights()[0],
        task.build_model(classifier_config(questions, language_model_run))
        .get_layer("bidirectional_1").backward_layer.get_weights()[0])
    two = trained(2)  # epoch 2: the recurrent layer too; the word vectors wait for epoch 3
    assert not np.allclose(
        two.get_layer("bidirectional_1").forward_layer.get_weights()[0], lm_kernel)
    start = task.build_model(classifier_config(questions, language_model_run))
    vectors = two.get_layer("embedding").embeddings.numpy()
    # Row 0 is padding (masked, never read); every word row is still where it started.
    np.testing.assert_array_equal(vectors[1:], start.get_layer("embedding").embeddings[1:])
    assert (vectors == lm_vectors[0]).all(axis=1).sum() == 1  # the pretrained start, not random


def test_encoder_from_names_what_does_not_fit(questions, language_model_run, tmp_path,
                                             shared_data):
    task = get_task("classify")
    cases = [
        (["cell=gru"], "layer 1 is GRUCell(16) in the classifier, LSTMCell(16) in the language"),
        (["units=32"], "layer 1 is LSTMCell(32) in the classifier, LSTMCell(16)"),
        (["embedding_dim=32"], "word vectors of 16 (embedding_dim) in the language model, 32"),
        (["layers=2"], "2 recurrent layers in the classifier, only 1 in the language model"),
        (["model=bow"], "encoder_from needs the recurrent model"),
        (["encoder_learning_rate=0"], "encoder_learning_rate=0.0 must be above 0"),
    ]
    for extra, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            task.build_model(classifier_config(questions, language_model_run, *extra))

    with pytest.raises(UserError, match="no such run directory"):
        task.build_model(classifier_config(questions, tmp_path / "nowhere"))
    with pytest.raises(UserError, match="gradual_unfreezing=true needs pretrained layers"):
        task.build_model(task.config("quick", [f"data={questions}", *CLASSIFIER,
                                               "gradual_unfreezing=true"]))

    # A language model of other text: WikiText-2's articles share few words with questions.
    from pipelines.training.trainer import train

    wiki = tmp_path / "wiki.txt"
    lines = (shared_data / "wikitext2" / "wikitext-2" / "wiki.train.tokens").read_text(
        encoding="utf-8").splitlines()
    wiki.write_text("\n".join(line for line in lines[:400] if line.strip()), encoding="utf-8")
    lm_task = get_task("language_model")
    other = train(lm_task, lm_task.config("quick", [f"data={wiki}", *LM, "max_tokens=400"]),
                  tmp_path / "wiki_lm").run_dir
    with pytest.raises(UserError, match="has another vocabulary: it knows"):
        task.build_model(classifier_config(questions, other))
    # Refused by `train`: the run directory it created is gone again (its config.json with it).
    with pytest.raises(UserError, match="has another vocabulary"):
        train(task, classifier_config(questions, other), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    # And a run of another task is named as such.
    with pytest.raises(UserError, match="is a classify run, not a language model"):
        classifier = train(task, task.config("quick", [f"data={questions}", *CLASSIFIER]),
                           tmp_path / "classifier").run_dir
        task.build_model(classifier_config(questions, classifier))


def test_the_classifier_takes_the_language_models_sizes_unless_set(questions,
                                                                    language_model_run):
    from models.language_model import recurrent
    from pipelines.training.pretraining import load_language_model

    lm = recurrent(load_language_model(str(language_model_run)))[0]
    bare = [f"data={questions}", "max_tokens=1500", "max_length=30",
            f"encoder_from={language_model_run}"]
    task = get_task("classify")
    # The quick profile's embedding 128 and units 64 give way to the language model's 16.
    assert task.config("quick", [f"data={questions}"]).units == 64
    config = task.config("quick", bare)
    assert (config.cell, config.embedding_dim, config.units) == ("lstm", 16, 16)
    model = task.build_model(config)
    forward = model.get_layer("bidirectional_1").forward_layer
    for mine, theirs in zip(forward.get_weights(), lm.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    # A size given on the command line stays, and is refused if it does not fit.
    assert task.config("quick", [*bare, "units=32"]).units == 32
    with pytest.raises(UserError, match=r"LSTMCell\(32\) in the classifier"):
        task.build_model(task.config("quick", [*bare, "units=32"]))
    # The sentiment preset's full profile starts its embedding from PPMI-SVD vectors: with
    # encoder_from it starts from the language model's instead, unless word_vectors is given.
    sentiment = get_task("sentiment")
    assert sentiment.config("full").word_vectors == "ppmi_svd"
    taken = sentiment.config("full", [f"encoder_from={language_model_run}"])
    assert (taken.word_vectors, taken.embedding_dim, taken.units) == ("random", 16, 16)
    kept = sentiment.config("full", [f"encoder_from={language_model_run}",
                                     "word_vectors=ppmi_svd"])
    with pytest.raises(UserError, match="both start the embedding"):
        kept.validate()


def test_layerwise_adam_scales_and_holds_the_named_variables():
    """One Adam step moves each variable by about its learning rate: the named one by its
    share of it, and not at all before its start epoch."""
    import keras

    from pipelines.training.optimizer import adam

    scaled = keras.Variable(np.zeros(3, np.float32), name="scaled")
    frozen = keras.Variable(np.zeros(3, np.float32), name="frozen")
    plain = keras.Variable(np.zeros(3, np.float32), name="plain")
    optimizer = adam(0.1, None, {scaled.path: (0.25, 0), frozen.path: (1.0, 1)})
    gradients = [np.ones(3, np.float32)] * 3
    optimizer.apply(gradients, [scaled, frozen, plain])
    np.testing.assert_allclose(plain.numpy(), -0.1, rtol=1e-3)
    np.testing.assert_allclose(scaled.numpy(), -0.025, rtol=1e-3)
    np.testing.assert_array_equal(frozen.numpy(), 0.0)
    optimizer.epoch.assign(1)  # what the trainer's epoch callback does at epoch 2's start
    optimizer.apply(gradients, [scaled, frozen, plain])
    assert frozen.numpy()[0] < -0.05


def test_layer_rates_only_when_a_pretrained_layer_trains_differently(questions,
                                                                   language_model_run):
    from pipelines.training.pretraining import layer_rates

    task = get_task("classify")
    config = classifier_config(questions, language_model_run)
    model = task.build_model(config)
    assert layer_rates(model, config) == {}  # plain Adam does the same
    rates = layer_rates(model, config.replace(encoder_learning_rate=0.5))
    names = {path.split("/")[0] for path in rates}
    assert names == {"embedding", "bidirectional_1"}, names
    assert all("backward" not in path for path in rates)
    assert set(rates.values()) == {(0.5, 0)}
