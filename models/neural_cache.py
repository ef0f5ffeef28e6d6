"""Continuous cache for a language model (Grave, Joulin & Usunier 2017).

A text repeats its own rare words: a name, a place, a term that the model's softmax gives little
mass. The cache remembers the model's last N hidden states h_i and the word y_i that followed
each, and lets the current state h_t point at them:

    p_cache(w | t) = sum over i in [t-N, t) with y_i = w of exp(theta h_t . h_i)
                     / sum over i in [t-N, t) of exp(theta h_t . h_i)
    p(w | t)       = (1 - lambda) p_model(w | t) + lambda p_cache(w | t)

Nothing is trained: theta (how sharply a state points) and lambda (how much the cache is trusted)
are picked on validation text. These functions score only the word that came (what perplexity
needs), for several thetas and lambdas at once, so one pass over a text tries a whole grid.
"""

from __future__ import annotations

import tensorflow as tf


def empty_memory(batch_size: int, size: int, dim: int) -> list[tf.Tensor]:
    """A cache with nothing in it: [hidden [batch, size, dim], words [batch, size],
    positions [batch, size]]; position -1 marks an empty slot.

    Args:
        batch_size: number of streams, each with its own cache.
        size: N, the number of past steps remembered.
        dim: size of a hidden state.
    """
    return [tf.zeros([batch_size, size, dim]), tf.zeros([batch_size, size], tf.int32),
            -tf.ones([batch_size, size], tf.int32)]


def cache_log_probabilities(hidden: tf.Tensor, words: tf.Tensor, start: tf.Tensor,
                            memory: list[tf.Tensor], thetas: tf.Tensor
                            ) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
    """log p_cache of the word that came at every step, for each theta, and the new memory.

    Returns (log_p [thetas, batch, time], -inf where no remembered step was followed by that
    word; has_cache bool [batch, time], False where the cache was still empty; the memory after
    these steps).

    Args:
        hidden: the model's top hidden states of these steps [batch, time, dim].
        words: the word that followed each step [batch, time] (the one to score).
        start: position of the first of these steps in the stream (int32 scalar).
        memory: the cache before these steps (empty_memory, or a previous call's).
        thetas: the flatness values to try [thetas].
    """
    past_hidden, past_words, past_positions = memory
    size = tf.shape(past_hidden)[1]
    time = tf.shape(hidden)[1]
    positions = start + tf.range(time)
    keys = tf.concat([past_hidden, hidden], axis=1)  # [batch, size + time, dim]
    key_words = tf.concat([past_words, words], axis=1)
    key_positions = tf.concat(
        [past_positions, tf.broadcast_to(positions, tf.shape(words))], axis=1)
    # A step sees the `size` steps before it (its own word is the one being predicted).
    query = positions[None, :, None]
    key = key_positions[:, None, :]
    visible = (key >= 0) & (key < query) & (key >= query - size)  # [batch, time, keys]
    follows = visible & tf.equal(key_words[:, None, :], words[:, :, None])
    dots = tf.einsum("btd,bkd->btk", hidden, keys)
    has_cache = tf.reduce_any(visible, axis=-1)
    # Shifted by each step's largest visible dot product, so exp never overflows for any
    # theta > 0; hidden steps become -inf, exp 0. The shift cancels in the ratio.
    shifted = tf.where(visible, dots, -float("inf"))
    shifted -= tf.where(has_cache, tf.reduce_max(shifted, axis=-1), 0.0)[..., None]
    weights = tf.exp(thetas[:, None, None, None] * shifted[None])  # [thetas, batch, time, keys]
    normaliser = tf.reduce_sum(weights, axis=-1)
    matched = tf.reduce_sum(weights * tf.cast(follows, weights.dtype)[None], axis=-1)
    # The largest visible step weighs exp(0) = 1, so a step with a cache has normaliser >= 1;
    # no visible step, or none followed by the word: log 0 = -inf.
    log_p = tf.where(matched > 0, tf.math.log(matched) - tf.math.log(normaliser),
                     -float("inf"))
    new_memory = [keys[:, -size:], key_words[:, -size:], key_positions[:, -size:]]
    return log_p, has_cache, new_memory


def mix(model_log_p: tf.Tensor, cache_log_p: tf.Tensor, has_cache: tf.Tensor,
        lambdas: tf.Tensor) -> tf.Tensor:
    """log((1 - lambda) p_model + lambda p_cache) for every theta and lambda.

    Returns [thetas, lambdas, batch, time]; where the cache was empty, log p_model itself.

    Args:
        model_log_p: log p_model of the word that came [batch, time].
        cache_log_p: cache_log_probabilities' log_p [thetas, batch, time].
        has_cache: cache_log_probabilities' has_cache [batch, time].
        lambdas: the interpolation weights to try [lambdas], each in (0, 1).
    """
    weights = lambdas[None, :, None, None]
    from_model = tf.math.log1p(-weights) + model_log_p[None, None]  # finite
    from_cache = tf.math.log(weights) + cache_log_p[:, None]  # -inf where no word matched
    mixed = tf.experimental.numpy.logaddexp(from_model, from_cache)  # finite: from_model is
    return tf.where(has_cache[None, None], mixed, model_log_p[None, None])
