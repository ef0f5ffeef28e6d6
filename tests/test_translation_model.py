"""The attentional encoder-decoder: shapes, padding masks, search, metric, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.translation import CrossAttention, MaskedTokenAccuracy, Translator

SOURCE = ["", "[UNK]", "¿", "dónde", "está", "?", "hola", "."]
TARGET = ["", "[UNK]", "[START]", "[END]", "where", "is", "it", "?", "hello", "."]


def make_model(cell: str = "gru", attention: str = "additive") -> Translator:
    keras.utils.set_random_seed(1)
    translator = Translator(SOURCE, TARGET, embedding_dim=8, units=6, cell=cell,
                            attention=attention)
    translator.build()
    return translator


@pytest.fixture(scope="module")
def model() -> Translator:
    return make_model()


@pytest.mark.parametrize(("cell", "attention"), [("gru", "additive"),
                                                 ("lstm", "multiplicative"),
                                                 ("rnn", "additive")])
def test_logits_shape_and_padding_does_not_change_them(cell, attention):
    model = make_model(cell, attention)
    source = tf.constant([[2, 3, 4, 5], [6, 7, 0, 0]], tf.int64)
    target = tf.constant([[2, 4, 5, 6], [2, 8, 9, 0]], tf.int64)
    logits = model((source, target))
    assert logits.shape == (2, 4, len(TARGET))
    # Extra padding on either side changes nothing at the real positions.
    padded = model((tf.pad(source, [[0, 0], [0, 3]]), tf.pad(target, [[0, 0], [0, 2]])))
    np.testing.assert_allclose(padded[:, :4], logits, atol=1e-5)
    # A sentence alone gives what it gives in a batch with a longer one.
    alone = model((source[1:, :2], target[1:, :3]))
    np.testing.assert_allclose(alone, logits[1:, :3], atol=1e-5)


def test_attention_ignores_padding_and_sums_to_one():
    attention = CrossAttention(4, "additive")
    values = tf.random.normal([2, 5, 6], seed=1)
    mask = tf.constant([[True] * 5, [True, True, False, False, False]])
    context, weights = attention(tf.random.normal([2, 3, 6], seed=2), values, mask)
    assert context.shape == (2, 3, 6) and weights.shape == (2, 3, 5)
    np.testing.assert_allclose(tf.reduce_sum(weights, -1), np.ones([2, 3]), atol=1e-6)
    assert float(tf.reduce_max(weights[1, :, 2:])) < 1e-6


def test_search_outputs_end_then_padding(model):
    source = model.source_ids(tf.constant(["¿Dónde está?", "hola ."]))
    greedy = model.greedy_search(source, max_length=6).numpy()
    assert np.array_equal(model.beam_search(source, beam_width=1, max_length=6).numpy(), greedy)
    beam = model.beam_search(source, beam_width=3, max_length=6).numpy()
    for ids in (greedy, beam):
        assert ids.shape[0] == 2 and ids.shape[1] <= 6
        for row in ids:
            assert 0 not in row[: np.argmax(row == 3) if 3 in row else len(row)]
            if 3 in row:  # nothing but padding after [END]
                assert not row[np.argmax(row == 3) + 1:].any()
            assert 2 not in row  # [START] is never generated


def test_empty_sentences_and_batches_translate_in_a_graph(model):
    translate = tf.function(lambda text: model.translate(text, beam_width=2, max_length=5),
                            input_signature=[tf.TensorSpec([None], tf.string)])
    assert translate(tf.constant(["", "hola ."])).shape == (2,)
    assert translate(tf.constant([], tf.string)).shape == (0,)
    attend = tf.function(lambda text: model.translate_with_attention(text, 2, 5),
                         input_signature=[tf.TensorSpec([None], tf.string)])
    assert attend(tf.constant([""]))["attention"].shape[2] == 0
    with pytest.raises(tf.errors.InvalidArgumentError, match="exactly one sentence") as err:
        attend(tf.constant(["hola", "hola"]))
    assert "Condition" not in err.value.message  # the reason only, no TensorFlow internals


def test_max_input_tokens_cuts_long_sentences_in_the_graph(model):
    long = " ".join(["hola"] * 3 + ["dónde"] * 200_000)  # 1.2 MB, as issue 24's request
    translate = tf.function(lambda text: model.translate(text, 2, 5, max_input_tokens=4),
                            input_signature=[tf.TensorSpec([None], tf.string)])
    cut = translate(tf.constant([long])).numpy()
    assert np.array_equal(cut, translate(tf.constant(["hola hola hola dónde"])).numpy())
    assert model.source_ids(tf.constant([long]), 4).shape == (1, 4)
    attend = model.translate_with_attention(tf.constant([long]), 2, 5, max_input_tokens=4)
    assert attend["source_tokens"].shape == (1, 4)
    assert attend["attention"].shape[2] == 4


def test_beam_search_scores_at_least_greedy_with_no_length_penalty(model):
    source = model.source_ids(tf.constant(["¿Dónde está?", "hola .", "está"]))

    def log_prob(ids):
        start = tf.fill([ids.shape[0], 1], tf.constant(model.start_id, tf.int64))
        logits = model((source, tf.concat([start, ids[:, :-1]], 1)))
        lp = tf.gather(tf.nn.log_softmax(logits), ids, batch_dims=2)
        return tf.reduce_sum(tf.where(ids != 0, lp, 0.0), axis=1).numpy()

    greedy = model.greedy_search(source, max_length=8)
    beam = model.beam_search(source, beam_width=4, max_length=8, length_penalty=0.0)
    assert np.all(log_prob(beam) >= log_prob(greedy) - 1e-4)


def test_masked_token_accuracy_counts_real_tokens_only():
    metric = MaskedTokenAccuracy()
    y_true = tf.constant([[4, 5, 0], [6, 0, 0]])
    y_pred = tf.one_hot([[4, 9, 9], [6, 9, 9]], 10)  # right, wrong, pad | right, pad, pad
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == pytest.approx(2 / 3)


def test_save_and_load_keeps_vocabularies_and_outputs(tmp_path):
    model = make_model("lstm", "multiplicative")  # two states per layer, the other score
    text = tf.constant(["¿Dónde está?", "hola ."])
    expected = model.translate(text, beam_width=2, max_length=6).numpy()
    model.save(tmp_path / "translator.keras")
    loaded = keras.saving.load_model(tmp_path / "translator.keras", compile=False)
    assert loaded.target_vocabulary == TARGET
    assert np.array_equal(loaded.translate(text, beam_width=2, max_length=6).numpy(), expected)


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="cell="):
        Translator(SOURCE, TARGET, cell="transformer")
    with pytest.raises(ValueError, match=r"\[START\]"):
        Translator(SOURCE, ["", "[UNK]", "a"])
    with pytest.raises(ValueError, match="score="):
        CrossAttention(4, "cosine")
