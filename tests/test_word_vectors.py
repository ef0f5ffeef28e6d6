"""PPMI-SVD word vectors: counts, PMI and SVD against hand and textbook results, and the
sentiment model starting from vectors learned on real reviews."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.tasks import get_task, word_vectors
from serving.errors import UserError


def test_cooccurrences_weight_by_distance_and_stop_at_padding():
    # Two texts, [2 3 4] and [2 3], separated by two padding ids; 1 is out-of-vocabulary.
    stream = np.array([2, 3, 4, 0, 0, 2, 3, 1, 4], np.int32)
    counts = word_vectors.cooccurrences(stream, vocabulary_size=5, window=2)
    expected = np.zeros((5, 5), np.float32)
    expected[2, 3] = expected[3, 2] = 2.0  # adjacent in both texts
    expected[3, 4] = expected[4, 3] = 1.0  # adjacent in the first
    expected[2, 4] = expected[4, 2] = 0.5  # two apart in the first
    # 3 ... 4 in the second text straddle the out-of-vocabulary id, two apart.
    expected[3, 4] += 0.5
    expected[4, 3] += 0.5
    np.testing.assert_allclose(counts, expected)


def test_cooccurrences_count_repeated_words_on_the_diagonal():
    counts = word_vectors.cooccurrences(np.array([2, 2, 2], np.int32), 3, window=1)
    assert counts[2, 2] == 4.0  # two adjacent pairs, each counted in both directions


def test_ppmi_matches_the_definition():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(6, 6)).astype(np.float32)
    counts[5] = counts[:, 5] = 0  # a word never seen
    expected = np.zeros((6, 6))
    total = counts.sum()
    context = counts.sum(axis=0) ** 0.75
    for w in range(6):
        for c in range(6):
            if counts[w, c] > 0:
                pmi = np.log((counts[w, c] / total)
                             / (counts[w].sum() / total * context[c] / context.sum()))
                expected[w, c] = max(pmi, 0.0)
    np.testing.assert_allclose(word_vectors.ppmi(counts.copy()), expected, rtol=1e-5, atol=1e-6)


def test_truncated_svd_reconstructs_a_low_rank_matrix():
    rng = np.random.default_rng(1)
    factor = rng.standard_normal((300, 8)).astype(np.float32)
    matrix = factor @ factor.T  # symmetric, rank 8: (U sqrt S)(U sqrt S)^T is the matrix
    vectors = word_vectors.truncated_svd_vectors(matrix, dim=8, seed=0)
    assert vectors.shape == (300, 8)
    np.testing.assert_allclose(vectors @ vectors.T, matrix, atol=1e-2 * np.abs(matrix).max())


def _nearest(table: np.ndarray, vocabulary: list[str], word: str, k: int) -> list[str]:
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-9)
    similarity = unit @ unit[vocabulary.index(word)]
    return [vocabulary[i] for i in np.argsort(-similarity)[1:k + 1]]


@pytest.fixture(scope="module")
def frozen_run(shared_data, tfds_dir, tmp_path_factory):
    """One epoch of the sentiment model with frozen PPMI-SVD vectors, on 1500 real reviews."""
    from pipelines.training.trainer import train

    task = get_task("sentiment")
    config = task.config("quick", ["max_train_examples=1500", "epochs=1", "max_tokens=4000",
                                   "max_length=60", "units=8", "dense_units=8",
                                   "embedding_dim=32", "word_vectors=ppmi_svd",
                                   "train_embedding=false"])
    return config, train(task, config, tmp_path_factory.mktemp("runs") / "frozen")


def test_vectors_from_reviews_put_sentiment_words_together(frozen_run):
    _, result = frozen_run
    embedding = result.model.get_layer("embedding")
    vocabulary = result.model.get_layer("vectorizer").get_vocabulary()
    neighbours = _nearest(embedding.get_weights()[0], vocabulary, "bad", 10)
    assert {"awful", "terrible", "horrible", "worst", "poor"} & set(neighbours), neighbours
    norms = np.linalg.norm(embedding.get_weights()[0][2:], axis=1)
    np.testing.assert_allclose(norms[norms > 0.5], 1.0, rtol=1e-4)


def test_frozen_embedding_survives_training_and_reloading(frozen_run):
    from pipelines.training.checkpoints import CheckpointStore

    _, result = frozen_run
    reloaded = CheckpointStore(result.run_dir).load_model("last")
    embedding = reloaded.get_layer("embedding")
    assert not embedding.trainable
    assert not embedding.trainable_weights
    np.testing.assert_array_equal(embedding.get_weights()[0],
                                  result.model.get_layer("embedding").get_weights()[0])
    # Rows that were set to unit vectors are still unit vectors after an epoch of Adam steps.
    table = embedding.get_weights()[0]
    vocabulary = reloaded.get_layer("vectorizer").get_vocabulary()
    for word in ("bad", "good", "movie"):
        assert np.linalg.norm(table[vocabulary.index(word)]) == pytest.approx(1.0, abs=1e-5)


def test_unknown_word_vectors_are_user_errors(shared_data, tfds_dir):
    task = get_task("sentiment")
    with pytest.raises(UserError, match="word_vectors"):
        task.build_model(task.config("quick", ["word_vectors=glove"]))
    with pytest.raises(UserError, match="embedding_dim"):
        task.build_model(task.config("quick", ["word_vectors=ppmi_svd", "max_tokens=50",
                                               "embedding_dim=64"]))
