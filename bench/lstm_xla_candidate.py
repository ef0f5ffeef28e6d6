"""Times a candidate fused LSTM training step against rnnkit's LSTM layer, interleaved.

The candidate (issue 21; not yet behind the driver): the whole sequence's input projection in
one matmul, the recurrence as one tf.while_loop, a hand-written backward pass (saved gates,
one loop back in time, then the kernel, recurrent-kernel and bias gradients each as ONE matmul
over all steps instead of one per step), the forward and the backward each compiled by XLA
(`tf.function(jit_compile=True)`), joined by `tf.custom_gradient` in an ordinary traced
function, so a model that is not compiled could call it. Ours is models.layers.LSTM with the
same weights, unmasked, all steps returned. Both steps: loss = mean(output²), gradients of the
three weights. The gradients are compared first (they must agree to float rounding).

Printed per repeat: ms of each (median of `--calls` calls) and candidate / ours; then the
median ratio with its min-max over the repeats, and each side's first call (tracing, and for
the candidate XLA's compilation, which a new input shape costs again).

Run: `.venv/bin/python bench/lstm_xla_candidate.py [--shape B,T,I,H] [--repeats N]
[--calls N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def candidate(batch: int, steps: int, inputs: int, units: int):
    """The candidate LSTM: (x, kernel, recurrent_kernel, bias) -> all h, with its gradient."""
    import tensorflow as tf

    def arrays():
        return tf.TensorArray(tf.float32, steps)

    @tf.function(jit_compile=True)
    def forward(x, kernel, recurrent_kernel, bias):
        time_major = tf.transpose(x, [1, 0, 2])
        projected = tf.reshape(tf.reshape(time_major, [-1, inputs]) @ kernel + bias,
                               [steps, batch, 4 * units])

        def step(t, h, c, hs, cs, gates):
            z_i, z_f, z_c, z_o = tf.split(projected[t] + h @ recurrent_kernel, 4, axis=1)
            i, f, o, g = tf.sigmoid(z_i), tf.sigmoid(z_f), tf.sigmoid(z_o), tf.tanh(z_c)
            c = f * c + i * g
            h = o * tf.tanh(c)
            return (t + 1, h, c, hs.write(t, h), cs.write(t, c),
                    gates.write(t, tf.concat([i, f, g, o], 1)))

        zeros = tf.zeros([batch, units])
        _, _, _, hs, cs, gates = tf.while_loop(
            lambda t, *_: t < steps, step, (0, zeros, zeros, arrays(), arrays(), arrays()))
        hs, cs, gates = hs.stack(), cs.stack(), gates.stack()
        return tf.transpose(hs, [1, 0, 2]), hs, cs, gates

    @tf.function(jit_compile=True)
    def backward(d_out, x, kernel, recurrent_kernel, hs, cs, gates):
        d_hs = tf.transpose(d_out, [1, 0, 2])
        zeros = tf.zeros([batch, units])
        c_prev = tf.concat([zeros[None], cs[:-1]], 0)

        def step(k, dh_next, dc_next, d_zs):
            t = steps - 1 - k
            i, f, g, o = tf.split(gates[t], 4, axis=1)
            tanh_c = tf.tanh(cs[t])
            dh = d_hs[t] + dh_next
            dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
            d_z = tf.concat([dc * g * i * (1 - i), dc * c_prev[t] * f * (1 - f),
                             dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)], 1)
            return (k + 1, tf.matmul(d_z, recurrent_kernel, transpose_b=True), dc * f,
                    d_zs.write(t, d_z))

        _, _, _, d_zs = tf.while_loop(lambda k, *_: k < steps, step,
                                      (0, zeros, zeros, arrays()))
        d_z = tf.reshape(d_zs.stack(), [steps * batch, 4 * units])
        h_prev = tf.reshape(tf.concat([zeros[None], hs[:-1]], 0), [steps * batch, units])
        flat_x = tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, inputs])
        d_x = tf.transpose(tf.reshape(d_z @ tf.transpose(kernel), [steps, batch, inputs]),
                           [1, 0, 2])
        return (d_x, tf.matmul(flat_x, d_z, transpose_a=True),
                tf.matmul(h_prev, d_z, transpose_a=True), tf.reduce_sum(d_z, 0))

    @tf.custom_gradient
    def lstm(x, kernel, recurrent_kernel, bias):
        out, hs, cs, gates = forward(x, kernel, recurrent_kernel, bias)

        def gradient(d_out):
            return backward(d_out, x, kernel, recurrent_kernel, hs, cs, gates)

        return out, gradient

    return lstm


def main() -> int:
    """Compare the gradients, then time both training steps; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="32,400,64,256", help="B,T,I,H")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    batch, steps, inputs, units = (int(v) for v in args.shape.split(","))

    import numpy as np
    import tensorflow as tf

    from models.layers import LSTM

    x = tf.constant(np.random.default_rng(0).standard_normal((batch, steps, inputs)), tf.float32)
    ours = LSTM(units, return_sequences=True)
    ours(x)
    weights = [ours.cell.kernel, ours.cell.recurrent_kernel, ours.cell.bias]
    lstm = candidate(batch, steps, inputs, units)

    @tf.function
    def step_ours():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(ours(x, training=True) ** 2)
        return tape.gradient(loss, weights)

    @tf.function
    def step_candidate():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(lstm(x, *[tf.identity(w) for w in weights]) ** 2)
        return tape.gradient(loss, weights)

    first = {}
    results = {}
    for name, step in (("ours", step_ours), ("candidate", step_candidate)):
        started = time.perf_counter()
        results[name] = [g.numpy() for g in step()]
        first[name] = time.perf_counter() - started
    worst = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12))
                for a, b in zip(results["ours"], results["candidate"], strict=True))
    print(f"LSTM {args.shape}: gradients agree to {worst:.1e} (relative); first call: ours "
          f"{first['ours']:.1f} s, candidate {first['candidate']:.1f} s")

    ratios = []
    for repeat in range(args.repeats):
        ms = {}
        for name, step in (("ours", step_ours), ("candidate", step_candidate)):
            times = []
            for _ in range(args.calls):
                started = time.perf_counter()
                [g.numpy() for g in step()]
                times.append((time.perf_counter() - started) * 1000)
            ms[name] = statistics.median(times)
        ratios.append(ms["candidate"] / ms["ours"])
        print(f"repeat {repeat + 1}: ours {ms['ours']:.1f} ms, candidate "
              f"{ms['candidate']:.1f} ms, candidate / ours {ratios[-1]:.2f}")
    print(f"training step, candidate / ours: median {statistics.median(ratios):.2f} "
          f"[{min(ratios):.2f}-{max(ratios):.2f}] over {args.repeats} repeats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
