"""Word dropout to the unknown word: trains the vector that stands for words never seen."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="rnnkit")
class UnknownWordDropout(keras.layers.Layer):
    """In training, replace a share of word ids [batch, time] by the unknown word's id.

    The unknown word's vector then learns from known words' contexts, standing in for the words
    a test sentence brings that training never saw. Padding (id 0) stays.

    Args:
        rate: share of words replaced in training.
        unknown_id: the out-of-vocabulary id.
        seed: the random seed.
        **kwargs: Keras layer arguments.
    """

    def __init__(self, rate: float, unknown_id: int = 1, seed: int | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1), got {rate}.")
        self.rate = rate
        self.unknown_id = unknown_id
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, ids, training=None):
        if not training or not self.rate:
            return ids
        draw = keras.random.uniform(keras.ops.shape(ids), seed=self.seed_generator)
        replace = keras.ops.logical_and(draw < self.rate, ids > self.unknown_id)
        return keras.ops.where(replace, keras.ops.cast(self.unknown_id, ids.dtype), ids)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "unknown_id": self.unknown_id,
                "seed": self.seed}
