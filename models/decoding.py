"""Decoding: greedy search, beam search and sampling over a model's step function, in one place.

Every generating model (the translator, the captioner, the language model) hands over the same
three things and gets token ids back:

- a *step function* `step_fn(token_ids [n], states) -> (logits [n, vocabulary], new states)`:
  one decoder step, with `states` any nest of tensors whose first axis is the row;
- the initial `states` and the `start_ids` [batch] fed to the first step;
- `end_id`, the token that finishes a row.

Each search runs inside the graph (a `tf.while_loop`, so it exports in a SavedModel), stops when
every row has finished or after `max_length` steps (a Python int or a scalar tensor), and returns
ids [batch, steps run] with `fill_id` after each row's end token. Banned tokens (padding, the
start token, the unknown word) are removed before the softmax, so the remaining words' scores are
a proper distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

StepFn = Callable[[tf.Tensor, Any], tuple[tf.Tensor, Any]]
NEG = -1e9  # a log-probability nothing wins with, finite so sums of scores stay finite


def ban(logits: tf.Tensor, banned_ids: Sequence[int]) -> tf.Tensor:
    """Push the logits of `banned_ids` to a value no other token loses to.

    Args:
        logits: [n, vocabulary].
        banned_ids: token ids never to choose.
    """
    if not banned_ids:
        return logits
    vocab = tf.shape(logits)[-1]
    penalty = tf.reduce_sum(tf.one_hot(list(banned_ids), vocab, on_value=NEG, off_value=0.0), 0)
    return logits + tf.cast(penalty, logits.dtype)


def choose(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, seed: tf.Tensor,
           step: tf.Tensor) -> tf.Tensor:
    """The next token of each row, sampled among its top_k tokens at a temperature.

    top_k 1 is greedy. Sampling adds Gumbel noise drawn from (seed, step) of each row (the
    Gumbel-max trick), so the same request answers the same tokens whatever else shares its
    batch.

    Args:
        logits: [batch, vocabulary].
        temperature: float [batch], > 0.
        top_k: int32 [batch], >= 1.
        seed: int64 [batch].
        step: int32 scalar, the position in the output.
    """
    vocabulary_size = tf.shape(logits)[1]
    k = tf.minimum(tf.reduce_max(top_k), vocabulary_size)
    values, indices = tf.math.top_k(logits / temperature[:, None], k=k)
    keep = tf.range(k)[None, :] < top_k[:, None]
    values = tf.where(keep, values, tf.constant(-float("inf"), values.dtype))

    def noise(row_seed: tf.Tensor) -> tf.Tensor:
        seed_pair = tf.stack([row_seed, tf.cast(step, tf.int64)])
        uniform = tf.random.stateless_uniform([k], seed=seed_pair, minval=1e-9, maxval=1.0)
        return -tf.math.log(-tf.math.log(uniform))

    gumbel = tf.map_fn(noise, seed, fn_output_signature=tf.TensorSpec([None], tf.float32))
    gumbel = tf.where(top_k[:, None] > 1, gumbel, tf.zeros_like(gumbel))
    best = tf.argmax(values + tf.cast(gumbel, values.dtype), axis=1, output_type=tf.int32)
    return tf.gather(indices, best, batch_dims=1)


def _any_batch_size(loop_vars: Any) -> Any:
    """Shape invariants that leave the leading (row) axis of every non-scalar tensor open."""
    return tf.nest.map_structure(
        lambda t: tf.TensorShape([None, *t.shape[1:]]) if t.shape.rank else t.shape, loop_vars)


def _token_by_token(step_fn: StepFn, states: Any, start_ids: tf.Tensor, end_id: int,
                    max_length: Any, pick: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
                    fill_id: int, row_limits: tf.Tensor | None) -> tf.Tensor:
    """The loop greedy search and sampling share: one token a row a step, chosen by `pick`."""
    batch = tf.shape(start_ids)[0]
    limits = tf.fill([batch], tf.cast(max_length, tf.int32)) if row_limits is None else row_limits

    def body(i, tokens, states, finished, output):
        logits, states = step_fn(tokens, states)
        finished = finished | (i >= limits)
        chosen = tf.where(finished, fill_id, pick(logits, i))
        return (i + 1, chosen, states, finished | tf.equal(chosen, end_id),
                output.write(i, chosen))

    def cond(i, tokens, states, finished, output):
        return (i < max_length) & ~tf.reduce_all(finished)

    loop_vars = (tf.constant(0), tf.cast(start_ids, tf.int32), states,
                 tf.zeros([batch], tf.bool),
                 tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]))
    invariants = (*_any_batch_size(loop_vars[:4]), tf.TensorShape(None))
    steps, _, _, _, output = tf.while_loop(cond, body, loop_vars, shape_invariants=invariants)
    # No step ran (no rows, or max_length 0): an empty TensorArray cannot stack rows of
    # unknown width.
    return tf.cond(steps > 0, lambda: tf.transpose(output.stack()),
                   lambda: tf.zeros([batch, 0], tf.int32))


def greedy_search(step_fn: StepFn, states: Any, start_ids: tf.Tensor, end_id: int,
                  max_length: Any, banned_ids: Sequence[int] = (), fill_id: int = 0,
                  row_limits: tf.Tensor | None = None) -> tf.Tensor:
    """The most likely token at each step: ids [batch, steps], `fill_id` after a row's end.

    Args: as `sample`'s, which with top_k 1 chooses the same tokens (this skips its noise).
    """
    def pick(logits, step):
        return tf.argmax(ban(logits, banned_ids), axis=-1, output_type=tf.int32)

    return _token_by_token(step_fn, states, start_ids, end_id, max_length, pick, fill_id,
                           row_limits)


def sample(step_fn: StepFn, states: Any, start_ids: tf.Tensor, end_id: int, max_length: Any,
           temperature: tf.Tensor, top_k: tf.Tensor, seed: tf.Tensor,
           banned_ids: Sequence[int] = (), fill_id: int = 0,
           row_limits: tf.Tensor | None = None) -> tf.Tensor:
    """Sampled tokens (see `choose`): ids [batch, steps], `fill_id` after a row's end.

    Args:
        step_fn: (token ids [batch], states) -> (logits [batch, vocabulary], new states).
        states: the initial states (any nest of tensors with rows first).
        start_ids: [batch] tokens fed to the first step.
        end_id: the token that finishes a row.
        max_length: most tokens generated (int or scalar tensor).
        temperature: float [batch], > 0.
        top_k: int32 [batch], >= 1 (1 is greedy).
        seed: int64 [batch]; the same seed repeats a row's tokens exactly.
        banned_ids: tokens never chosen.
        fill_id: the id written after a row has finished.
        row_limits: int32 [batch], most tokens of each row; None for max_length.
    """
    def pick(logits, step):
        # Banned after the temperature: a huge temperature would flatten the penalty away.
        scaled = ban(logits / temperature[:, None], banned_ids)
        return choose(scaled, tf.ones_like(temperature), top_k, seed, step)

    return _token_by_token(step_fn, states, start_ids, end_id, max_length, pick, fill_id,
                           row_limits)


def beam_search(step_fn: StepFn, states: Any, start_ids: tf.Tensor, end_id: int,
                max_length: Any, beam_width: int, length_penalty: float = 0.0,
                banned_ids: Sequence[int] = (), fill_id: int = 0) -> tf.Tensor:
    """Keep the `beam_width` most likely sequences per row; return the best: ids [batch, steps].

    Finished hypotheses stay in the beam with a frozen score (they may only append `fill_id`,
    at no cost); the final pick divides each log-probability by length**length_penalty, so long
    outputs are not unfairly punished. Beam width 1 is greedy search.

    Args:
        step_fn: (token ids [n], states) -> (logits [n, vocabulary], new states), n = batch *
            beam_width; the beams of one row sit next to each other.
        states: the initial states (any nest of tensors with rows first).
        start_ids: [batch] tokens fed to the first step.
        end_id: the token that finishes a hypothesis.
        max_length: most tokens generated (int or scalar tensor).
        beam_width: hypotheses kept per row.
        length_penalty: exponent of the length normalisation (0 = raw log-probabilities).
        banned_ids: tokens a live hypothesis never extends with.
        fill_id: the id written after a hypothesis has finished.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}.")
    batch = tf.shape(start_ids)[0]
    k = beam_width
    states = tf.nest.map_structure(lambda s: tf.repeat(s, k, axis=0), states)
    tokens = tf.repeat(tf.cast(start_ids, tf.int32), k, axis=0)
    # Only the first copy is live at the start, so the first step does not pick k duplicates.
    scores = tf.tile(tf.concat([[0.0], tf.fill([k - 1], NEG)], 0)[None, :], [batch, 1])
    finished = tf.zeros([batch, k], tf.bool)
    lengths = tf.zeros([batch, k], tf.float32)
    output = tf.zeros([batch, k, 0], tf.int32)

    def body(i, tokens, states, scores, finished, lengths, output):
        logits, states = step_fn(tokens, states)
        log_probs = tf.nn.log_softmax(ban(tf.cast(logits, tf.float32), banned_ids))
        log_probs = tf.reshape(log_probs, [batch, k, -1])
        vocab = tf.shape(log_probs)[-1]
        fill_only = tf.tensor_scatter_nd_update(tf.fill([vocab], NEG), [[fill_id]], [0.0])
        log_probs = tf.where(finished[..., None], fill_only[None, None, :], log_probs)
        scores, flat_index = tf.math.top_k(tf.reshape(scores[..., None] + log_probs,
                                                      [batch, -1]), k)
        beams, chosen = flat_index // vocab, flat_index % vocab

        def reorder(tensor):
            # [batch * k, ...] rows in the order of the chosen parent beams [batch, k].
            shaped = tf.reshape(tensor, tf.concat([[batch, k], tf.shape(tensor)[1:]], 0))
            return tf.reshape(tf.gather(shaped, beams, batch_dims=1), tf.shape(tensor))

        states = tf.nest.map_structure(reorder, states)
        was_finished = tf.gather(finished, beams, batch_dims=1)
        lengths = tf.gather(lengths, beams, batch_dims=1) + tf.cast(~was_finished, tf.float32)
        output = tf.concat([tf.gather(output, beams, batch_dims=1), chosen[..., None]], 2)
        finished = was_finished | tf.equal(chosen, end_id)
        return i + 1, tf.reshape(chosen, [-1]), states, scores, finished, lengths, output

    def cond(i, tokens, states, scores, finished, lengths, output):
        return (i < max_length) & ~tf.reduce_all(finished)

    loop_vars = (tf.constant(0), tokens, states, scores, finished, lengths, output)
    invariants = (*_any_batch_size(loop_vars[:6]), tf.TensorShape([None, k, None]))
    _, _, _, scores, _, lengths, output = tf.while_loop(cond, body, loop_vars,
                                                        shape_invariants=invariants)
    normalized = scores / tf.maximum(lengths, 1.0) ** length_penalty
    best = tf.argmax(normalized, axis=1, output_type=tf.int32)
    return tf.gather(output, best, batch_dims=1)
