"""The continuous cache (models/neural_cache.py) against its formula, computed the slow way."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models import neural_cache


def brute_force(hidden: np.ndarray, words: np.ndarray, size: int, theta: float) -> np.ndarray:
    """log p_cache of each step's word, one step at a time from Grave et al.'s formula."""
    batch, time, _ = hidden.shape
    out = np.full((batch, time), -np.inf)
    for b in range(batch):
        for t in range(time):
            past = range(max(0, t - size), t)
            if not past:
                continue
            logits = np.array([theta * hidden[b, t] @ hidden[b, i] for i in past])
            weights = np.exp(logits - logits.max())
            weights /= weights.sum()
            matched = sum(w for w, i in zip(weights, past, strict=True)
                          if words[b, i] == words[b, t])
            out[b, t] = np.log(matched) if matched > 0 else -np.inf
    return out


def test_cache_matches_the_formula_across_windows():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(2, 23, 5)).astype("float32")
    words = rng.integers(0, 4, size=(2, 23)).astype("int32")
    thetas = (0.3, 1.0)
    size = 4  # smaller than a window: what a window sees comes partly from the memory
    memory = neural_cache.empty_memory(2, size, 5)
    pieces, seen = [], []
    for start in range(0, 23, 7):
        log_p, has_cache, memory = neural_cache.cache_log_probabilities(
            tf.constant(hidden[:, start:start + 7]), tf.constant(words[:, start:start + 7]),
            tf.constant(start), memory, tf.constant(thetas))
        pieces.append(log_p.numpy())
        seen.append(has_cache.numpy())
    got = np.concatenate(pieces, axis=2)
    for k, theta in enumerate(thetas):
        expected = brute_force(hidden, words, size, theta)
        np.testing.assert_array_equal(np.isfinite(got[k]), np.isfinite(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(got[k][finite], expected[finite], atol=1e-5)
    # Only each stream's first step has nothing cached.
    has_cache = np.concatenate(seen, axis=1)
    assert not has_cache[:, 0].any() and has_cache[:, 1:].all()


def test_mix_interpolates_and_falls_back_to_the_model():
    model_log_p = np.log(np.array([[0.2, 0.5, 0.1]], "float32"))
    cache_log_p = np.array([[[-np.inf, np.log(0.6), 0.0]]], "float32")  # first word: no match
    has_cache = np.array([[True, True, False]])
    mixed = neural_cache.mix(tf.constant(model_log_p), tf.constant(cache_log_p),
                             tf.constant(has_cache), tf.constant([0.25])).numpy()[0, 0]
    expected = [0.75 * 0.2, 0.75 * 0.5 + 0.25 * 0.6, 0.1]  # the last: empty cache, the model
    np.testing.assert_allclose(np.exp(mixed), [expected], rtol=1e-6)
