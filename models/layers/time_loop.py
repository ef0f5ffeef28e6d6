"""The loop over time under every recurrent layer: a tf.while_loop (or an unrolled loop)."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

# Steps per while-loop iteration when the length is known at tracing time. Each iteration
# projects a [c, batch, features] chunk of inputs in ONE matmul and then runs c steps: fewer,
# larger matmuls and c times less loop and TensorArray work, while the next chunk's projection
# (independent of the recurrence) can run ahead on another core. Each extra step per iteration
# adds a copy of the step to the graph and so costs tracing time: hence a small cap. When the
# length is unknown at tracing time (every padded batch from tf.data, every export), a loop
# of whole chunks runs first and a loop of single steps takes the rest (fewer than a chunk).
MAX_STEPS_PER_ITERATION = 4


def _masked(mask_t, new, old):
    """`new` where the step is valid, `old` where it is masked; mask_t is [batch] bool.

    TensorFlow's first Select picks whole rows by a [batch] condition. Its gradient is two
    selects, where tf.where's (SelectV2, which broadcasts) adds shape, reduce and reshape
    operations per operand whenever the batch size is unknown at tracing time, as in every
    training step over tf.data batches: three selects a step, so a loop's gradient graph
    grows by a fifth and takes longer to trace.
    """
    return tf.raw_ops.Select(condition=mask_t, x=new, y=old)


def _steps_per_iteration(steps: int | None) -> int:
    """The largest chunk up to MAX_STEPS_PER_ITERATION dividing a static length, else 1."""
    if not steps:
        return 1
    return max(c for c in range(1, MAX_STEPS_PER_ITERATION + 1) if steps % c == 0)


def _slices(structure, count: int, order) -> list:
    """The `count` slices along axis 0 of every tensor in `structure`, in `order`."""
    flat = [tf.unstack(x, num=count) for x in tf.nest.flatten(structure)]
    return [tf.nest.pack_sequence_as(structure, [x[j] for x in flat]) for j in order]


def _static_batch(per_sequence: list, time_major: list) -> int | None:
    """The batch size known at tracing time to any of the tensors (None if to none of them).

    Args:
        per_sequence: [batch, ...] tensors.
        time_major: [time, batch, ...] tensors.
    """
    known = {x.shape[0] for x in per_sequence} | {x.shape[1] for x in time_major}
    known.discard(None)
    if len(known) > 1:
        raise ValueError(
            f"the inputs, mask and states of a recurrent layer have different batch sizes "
            f"{sorted(known)}; give each of them one row per sequence.")
    return known.pop() if known else None


def _with_batch(x, batch: int | None, axis: int = 0):
    """`x` with the static batch size `batch` (at `axis`), checked when the graph runs.

    tf.while_loop needs each loop variable's static shape to stay the same, and a step's
    results know the batch size only if all its operands do (broadcasting an unknown size with
    1 gives an unknown size): so every tensor entering the loop is told the batch size that
    any of them knows. A mismatch then fails with a clear message instead of broadcasting.
    """
    if batch is None or x.shape[axis] is not None:
        return x
    shape = x.shape.as_list()
    shape[axis] = batch
    check = tf.debugging.assert_equal(
        tf.shape(x)[axis], batch,
        message="the input, mask and initial states of a recurrent layer have different batch "
                "sizes; give each of them one row per sequence.")
    # Not tf.ensure_shape: Grappler may run its check before the assert and its message
    # names no fix.
    with tf.control_dependencies([check]):
        x = tf.identity(x)
    x.set_shape(shape)
    return x


def _no_steps(initial_output) -> tf.Tensor:
    """The outputs of a sequence without time steps: [0, batch, ...]."""
    return tf.zeros(tf.concat([[0], tf.shape(initial_output)], 0), initial_output.dtype)


def run_time_loop(
    step_fn: Callable,
    inputs,
    initial_states: list,
    initial_output: tf.Tensor,
    project_fn: Callable | None = None,
    mask: tf.Tensor | None = None,
    go_backwards: bool = False,
    return_sequences: bool = False,
    zero_output_for_mask: bool = False,
    unroll: bool = False,
) -> tuple:
    """Runs `step_fn` over the leading (time) axis; returns (last_output, outputs, states).

    Masked steps carry the previous states and last output forward, as Keras does. `outputs`
    is time-major [time, batch, ...] in processing order (reversed with go_backwards), or None
    when not return_sequences. Without any time step the outputs are [0, batch, ...], the last
    output is `initial_output` and the states are the initial ones.

    All tensors must have the same batch size; where some know it at tracing time and others
    do not (a fixed-size input with states from elsewhere), all of them are given it.

    Args:
        step_fn: (projected_t, states) -> (output_t, new_states); states are flat lists.
        inputs: a tensor, or nested structure of tensors, shaped [time, batch, ...].
        initial_states: flat list of [batch, ...] state tensors.
        initial_output: zeros shaped like one step's output, returned if no step is valid.
        project_fn: maps inputs of one or several steps ([steps, batch, ...] or [batch, ...])
            to what step_fn takes (the input-only part of the step); identity when None.
        mask: [time, batch] bool, True at valid steps; None when every step is valid.
        go_backwards: process the steps from last to first.
        return_sequences: collect every step's output.
        zero_output_for_mask: emit zeros (rather than the last output) at masked steps.
        unroll: build one copy of the step per time step (needs a static time length).
    """
    project = project_fn or (lambda x: x)
    flat_inputs = tf.nest.flatten(inputs)
    batch = _static_batch([initial_output, *initial_states],
                          flat_inputs + ([] if mask is None else [mask]))
    flat_inputs = [_with_batch(x, batch, axis=1) for x in flat_inputs]
    inputs = tf.nest.pack_sequence_as(inputs, flat_inputs)
    initial_output = _with_batch(initial_output, batch)
    initial_states = [_with_batch(s, batch) for s in initial_states]
    if mask is not None:
        mask = tf.cast(_with_batch(mask, batch, axis=1), tf.bool)
    zeros = tf.zeros_like(initial_output)

    def advance(projected_t, mask_t, last, states):
        """One step: returns (emitted output, last valid output, states)."""
        output, new_states = step_fn(projected_t, states)
        if mask_t is None:
            return output, output, list(new_states)
        new_states = [_masked(mask_t, n, s) for n, s in zip(new_states, states, strict=True)]
        last = _masked(mask_t, output, last)
        emitted = _masked(mask_t, output, zeros) if zero_output_for_mask else last
        return emitted, last, new_states

    steps = flat_inputs[0].shape[0]
    if unroll and steps is None:
        raise ValueError(
            "unroll=True needs a known number of time steps; give the Input layer a fixed "
            "sequence length or use unroll=False.")
    if steps == 0:
        last, outputs, states = initial_output, _no_steps(initial_output), list(initial_states)
    elif unroll:
        order = range(steps - 1, -1, -1) if go_backwards else range(steps)
        masks = [None] * steps if mask is None else _slices(mask, steps, order)
        last, states, emitted = initial_output, list(initial_states), []
        for projected_t, mask_t in zip(_slices(project(inputs), steps, order), masks,
                                       strict=True):
            out, last, states = advance(projected_t, mask_t, last, states)
            emitted.append(out)
        outputs = tf.stack(emitted) if return_sequences else None
    elif steps is None and MAX_STEPS_PER_ITERATION > 1:
        last, outputs, states = _chunks_then_steps(
            advance, project, inputs, mask, MAX_STEPS_PER_ITERATION, initial_output,
            list(initial_states), go_backwards, return_sequences)
    else:
        last, outputs, states = _while_loop(
            advance, project, inputs, mask, _steps_per_iteration(steps), initial_output,
            list(initial_states), go_backwards, return_sequences)
    return last, outputs if return_sequences else None, states


def _chunks_then_steps(advance, project, inputs, mask, chunk, last, states, go_backwards,
                       return_sequences):
    """A length unknown at tracing time: `chunk` steps per iteration over as many whole chunks
    as fit, then one step per iteration over the rest, in processing order.

    Going forwards the chunks cover the first steps; going backwards, the last ones (which it
    processes first). Outputs are in processing order, as _while_loop's.
    """
    steps = tf.shape(tf.nest.flatten(inputs)[0])[0]
    rest = steps % chunk
    split = rest if go_backwards else steps - rest

    def first(x):
        return x[split:] if go_backwards else x[:split]

    def second(x):
        return x[:split] if go_backwards else x[split:]

    parts = []
    for take, steps_per_iteration in ((first, chunk), (second, 1)):
        last, outputs, states = _while_loop(
            advance, project, tf.nest.map_structure(take, inputs),
            None if mask is None else take(mask), steps_per_iteration, last, states,
            go_backwards, return_sequences)
        parts.append(outputs)
    return last, tf.concat(parts, 0) if return_sequences else None, states


def _while_loop(advance, project, inputs, mask, chunk, last, states, go_backwards,
                return_sequences):
    """tf.while_loop over [time, ...] inputs, `chunk` steps per iteration (time % chunk == 0).

    Outputs are written in processing order; with go_backwards the chunks, and the steps in
    each chunk, are read from the end, so no reversed copy of the inputs is made.
    """
    flat_inputs = tf.nest.flatten(inputs)
    steps = tf.shape(flat_inputs[0])[0]
    iterations = steps // chunk

    def array(x):
        """A TensorArray of the [chunk, batch, ...] pieces of x (of its steps when chunk=1)."""
        if chunk == 1:
            shape, pieces = x.shape[1:], x
        else:
            shape = tf.TensorShape([chunk]).concatenate(x.shape[1:])
            pieces = tf.reshape(x, tf.concat([[iterations, chunk], tf.shape(x)[1:]], 0))
        return tf.TensorArray(x.dtype, size=iterations, element_shape=shape).unstack(pieces)

    input_tas = [array(x) for x in flat_inputs]
    mask_ta = None if mask is None else array(mask)
    output_tas = ()
    if return_sequences:
        shape = last.shape if chunk == 1 else tf.TensorShape([chunk]).concatenate(last.shape)
        output_tas = (tf.TensorArray(last.dtype, size=iterations, element_shape=shape),)
    order = range(chunk - 1, -1, -1) if go_backwards else range(chunk)

    def body(i, output_tas, last, states):
        index = iterations - 1 - i if go_backwards else i
        projected = project(tf.nest.pack_sequence_as(inputs, [ta.read(index)
                                                              for ta in input_tas]))
        masks = None if mask_ta is None else mask_ta.read(index)
        if chunk == 1:
            projected, masks = [projected], [masks]
        else:
            projected = _slices(projected, chunk, order)
            masks = [None] * chunk if masks is None else _slices(masks, chunk, order)
        emitted, states = [], list(states)
        for projected_t, mask_t in zip(projected, masks, strict=True):
            out, last, states = advance(projected_t, mask_t, last, states)
            emitted.append(out)
        written = emitted[0] if chunk == 1 else tf.stack(emitted)
        output_tas = tuple(ta.write(i, written) for ta in output_tas)
        return i + 1, output_tas, last, tuple(states)

    _, output_tas, last, states = tf.while_loop(
        lambda i, *_: i < iterations, body,
        (tf.constant(0), output_tas, last, tuple(states)),
        maximum_iterations=iterations, parallel_iterations=32)
    outputs = None
    if return_sequences:
        outputs = _stacked(output_tas[0], iterations, last, chunk)
        if chunk > 1:
            outputs = tf.reshape(outputs, tf.concat([[steps], tf.shape(outputs)[2:]], 0))
    return last, outputs, list(states)


def _stacked(output_ta: tf.TensorArray, iterations, last, chunk: int) -> tf.Tensor:
    """The TensorArray's elements stacked, also when it is empty.

    Stacking an empty TensorArray needs its element shape at tracing time, which an unknown
    batch size leaves open: then zero iterations give [0, (chunk,) batch, ...] from `last`'s
    shape. The result keeps the elements' static shape, which tf.cond alone would lose.
    """
    if output_ta.element_shape.is_fully_defined():
        return output_ta.stack()
    leading = [0] if chunk == 1 else [0, chunk]
    stacked = tf.cond(iterations > 0, output_ta.stack,
                      lambda: tf.zeros(tf.concat([leading, tf.shape(last)], 0), last.dtype))
    stacked.set_shape(tf.TensorShape([None]).concatenate(output_ta.element_shape))
    return stacked
