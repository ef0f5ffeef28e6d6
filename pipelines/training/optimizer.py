"""The trainer's optimizer: Adam, one fused kernel per variable, with clipping, averaging, rates.

`adam` builds it from the run's settings. The classes are defined on first use (keras loads
lazily) and stack: `FusedAdam` is the base; with several replicas clipping moves after the
all-reduce (`ReplicaSumClippingAdam`); `ema_momentum` adds weight averaging
(`AveragingAdam`); pretrained layers' own rates add `LayerwiseAdam` on top.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras


def adam(learning_rate: float, clipnorm: float | None,
         layer_rates: dict[str, tuple[float, int]] | None = None,
         ema_momentum: float = 0.0) -> keras.optimizers.Optimizer:
    """Adam for the current strategy: with several replicas, `clipnorm` clips the summed gradient.

    Keras clips each replica's share of the gradient before summing the shares, so with N
    replicas a clipped gradient may reach N times `clipnorm`, and training differs from one
    device's; here clipping waits for the sum, as on one device.

    Args:
        learning_rate: Adam's learning rate.
        clipnorm: clip each variable's gradient to this norm; None for no clipping.
        layer_rates: variable path -> (scale of the learning rate, first epoch it trains in,
            0-based); variables not named train at the full rate from the start. The trainer's
            OptimizerEpoch callback tells the optimizer the epoch.
        ema_momentum: above 0, the optimizer also keeps an exponential moving average of the
            weights (Keras's `use_ema`), which the trainer's WeightAveraging callback swaps
            into the model for validation and checkpoints; 0 for none.
    """
    import tensorflow as tf

    single = tf.distribute.get_strategy().num_replicas_in_sync == 1
    base = _fused_adam() if single else _replica_sum_clipping_adam()
    kwargs: dict[str, Any] = {"learning_rate": learning_rate, "clipnorm": clipnorm}
    if ema_momentum > 0:
        base = _averaging(base)
        kwargs.update(use_ema=True, ema_momentum=ema_momentum)
    if layer_rates:
        return _layerwise(base)(layer_rates, **kwargs)
    return base(**kwargs)


@functools.cache
def _fused_adam() -> type:
    """Keras's Adam with each variable's step in TensorFlow's fused Adam kernel."""
    import keras
    import tensorflow as tf

    def handle(variable: Any) -> Any:
        return (variable.value if isinstance(variable, keras.Variable) else variable).handle

    class FusedAdam(keras.optimizers.Adam):
        """Keras's Adam, each variable's step one `ResourceApplyAdam` kernel.

        Keras writes the step as a dozen element-wise operations, each with a temporary the
        size of the variable; TensorFlow's kernel computes the same formula in place,

            alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)
            m += (g - m) (1 - beta_1);  v += (g^2 - v) (1 - beta_2)
            variable -= alpha m / (sqrt(v) + epsilon)

        (equal to Keras's step to float rounding). A row gradient (`tf.IndexedSlices`, from
        an embedding lookup) keeps Keras's meaning, which differs from the dense gradient's:
        its clipping norm and second moment take each listed row on its own, so a word used
        n times in a batch gets a second moment of the sum of n squares, not of the square
        of the sum (Keras 2 and PyTorch sum first). The profiles' learning rates are tuned
        with it: summing first learned markedly slower in the language model's first steps.

        Measured (two cores): the language model's quick step 161 against Keras's 168 ms,
        a BiLSTM classifier's 206 against 217 ms.

        Args:
            **kwargs: Keras Adam's arguments (`amsgrad`, or a beta of 0, takes Keras's step).
        """

        def apply(self, grads: Any, trainable_variables: Any = None) -> None:
            grads = list(grads)
            # Keras counts the step (and averages the weights) with no dependency on the
            # batch, so when an epoch over data of unknown size ends, the call that finds the
            # iterator empty has already counted one more step: `iterations` (Adam's t, the
            # run's optimizer_steps) grew by one an epoch. Tied to the gradients, it waits
            # for a batch that is never read.
            read = [g.values if isinstance(g, tf.IndexedSlices) else g
                    for g in grads if g is not None]
            with tf.control_dependencies(read):
                super().apply(grads, trainable_variables)

        def _clip_by_norm(self, values: Any, axes: Any = None) -> Any:
            if not isinstance(values, tf.IndexedSlices):
                return super()._clip_by_norm(values, axes)
            # Keras's norm of a row gradient: over its rows as listed, repeats included.
            # Scaling the rows saves Keras's densifying.
            scale = self.clipnorm / tf.maximum(tf.norm(values.values), self.clipnorm)
            return tf.IndexedSlices(values.values * tf.cast(scale, values.values.dtype),
                                    values.indices, values.dense_shape)

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            if self.amsgrad or self.beta_1 <= 0 or self.beta_2 <= 0:
                super().update_step(gradient, variable, learning_rate)
                return
            dtype = variable.dtype
            index = self._get_variable_index(variable)
            m, v = self._momentums[index], self._velocities[index]
            step = tf.cast(self.iterations + 1, dtype)
            beta_1 = tf.cast(self.beta_1, dtype)
            beta_2 = tf.cast(self.beta_2, dtype)
            if isinstance(gradient, tf.IndexedSlices):
                # Keras's step for rows: m and v take the sum of the rows' gradients and of
                # their squares (each repeat squared on its own). Added to the listed rows
                # beforehand, divided by beta, the kernel's decay with a zero gradient
                # leaves exactly that: beta (m + (1 - beta) / beta G) = beta m + (1 - beta) G.
                values = tf.cast(gradient.values, dtype)
                tf.raw_ops.ResourceScatterAdd(resource=handle(m), indices=gradient.indices,
                                              updates=values * ((1 - beta_1) / beta_1))
                tf.raw_ops.ResourceScatterAdd(resource=handle(v), indices=gradient.indices,
                                              updates=tf.square(values) * ((1 - beta_2) / beta_2))
                gradient = tf.zeros_like(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=handle(variable), m=handle(m), v=handle(v), beta1_power=tf.pow(beta_1, step),
                beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
                beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
                grad=tf.cast(gradient, dtype))

    return FusedAdam


@functools.cache
def _averaging(base: type) -> type:
    """`base` (an Adam with use_ema) that leaves the model's weights alone when fit ends."""

    class AveragingAdam(base):
        """Adam keeping a moving average of the weights, swapped by the WeightAveraging callback.

        The momentum warms up as TensorFlow's ExponentialMovingAverage(num_updates) does:
        step t (0-based) averages with min(ema_momentum, (1 + t) / (10 + t)), 0 at the first
        step, which starts the average at the first weights. Keras's constant momentum
        leaves 0.999**467 = 63% of the first step's weights in the average after an epoch of
        467 steps, so early validation would score a model close to its initialisation.

        Keras's `fit` ends by copying the optimizer's average slots into the model
        (`finalize_variable_values`). With the callback, the model already holds the average
        (or early stopping's best average) at that point and the slots hold the raw weights,
        so that copy would undo the averaging: here it does nothing.

        Args:
            **kwargs: Adam's arguments, with use_ema=True and ema_momentum.
        """

        def _update_model_variables_moving_average(self, trainable_variables: list) -> None:
            import tensorflow as tf

            step = tf.cast(self.iterations, tf.float32)
            momentum = tf.where(step > 0, tf.minimum(self.ema_momentum, (1 + step) / (10 + step)),
                                0.0)
            for variable, average in zip(trainable_variables, self._model_variables_moving_average,
                                         strict=True):
                if average is not None:
                    # avg += (1 - m) (w - avg): one pass fewer than m avg + (1 - m) w.
                    average.assign_add(tf.cast(1 - momentum, average.dtype)
                                       * (variable - average))

        def finalize_variable_values(self, var_list: list[Any]) -> None:
            del var_list

    return AveragingAdam


@functools.cache
def _layerwise(base: type) -> type:
    """`base` (an Adam) with per-variable learning-rate scales and start epochs."""
    import tensorflow as tf

    class LayerwiseAdam(base):
        """Adam whose steps on some variables are scaled, and zero before their start epoch.

        Args:
            layer_rates: variable path -> (learning-rate scale, first epoch it trains in).
            **kwargs: Adam's arguments.
        """

        def __init__(self, layer_rates: dict[str, tuple[float, int]], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.layer_rates = {path: (float(scale), int(start))
                                for path, (scale, start) in layer_rates.items()}
            # A plain (untracked) variable: set at every epoch's start, never checkpointed.
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

        def build(self, variables: list[Any]) -> None:
            super().build(variables)
            # update_step sees backend variables without Keras's path: index them here.
            self._rates_by_index = {i: self.layer_rates[v.path] for i, v in enumerate(variables)
                                    if v.path in self.layer_rates}

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            rate = self._rates_by_index.get(self._get_variable_index(variable))
            if rate is not None:
                scale, start = rate
                # A frozen variable gets a step of size 0; Adam's moments still follow it.
                on = tf.cast(self.epoch >= start, tf.float32)
                learning_rate = tf.cast(learning_rate, tf.float32) * scale * on
            super().update_step(gradient, variable, learning_rate)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "layer_rates": self.layer_rates}

    return LayerwiseAdam


def optimizer_epoch_callback() -> keras.callbacks.Callback:
    """A callback telling a layer-wise optimizer (see `adam`) which epoch runs."""
    import keras

    class OptimizerEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            clock = getattr(self.model.optimizer, "epoch", None)
            if clock is not None:
                clock.assign(epoch)

    return OptimizerEpoch()


@functools.cache
def _replica_sum_clipping_adam() -> type:
    """FusedAdam clipping after the all-reduce."""

    class ReplicaSumClippingAdam(_fused_adam()):
        """FusedAdam with clipping moved from each replica's gradient to their sum."""

        def _clip_gradients(self, grads: list[Any]) -> list[Any]:
            return grads  # clipped in _all_reduce_sum_gradients, once the replicas are summed

        def _all_reduce_sum_gradients(self, grads_and_vars: list[Any]) -> list[Any]:
            summed = super()._all_reduce_sum_gradients(grads_and_vars)
            clipped = super()._clip_gradients([grad for grad, _ in summed])
            return [(grad, var) for grad, (_, var) in zip(clipped, summed, strict=True)]

    return ReplicaSumClippingAdam
