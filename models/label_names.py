"""A pass-through layer that carries a model's class or tag names inside its checkpoint."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="rnnkit")
class LabelNames(keras.layers.Layer):
    """Identity on the model's scores; keeps the names of their last axis in its config.

    What a run learned from its data's label column (the names, in the order the scores use)
    thus lives in the checkpoint, and evaluation and export read it from the model.

    Args:
        names: one name per score, in score order.
        **kwargs: Keras layer arguments.
    """

    def __init__(self, names: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = [str(n) for n in names]
        self.supports_masking = True

    def call(self, scores):
        return scores

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "names": list(self.names)}


def label_names(model: keras.Model) -> list[str]:
    """The names a model's LabelNames layer carries.

    Args:
        model: a model built with a LabelNames layer.
    """
    for layer in model.layers:
        if isinstance(layer, LabelNames):
            return list(layer.names)
    raise ValueError(f"model {model.name} has no LabelNames layer")
