"""Start a classifier from a trained language model: its word vectors and recurrent layers.

Language-model pretraining (Dai & Le 2015; Howard & Ruder 2018): a model that learned to predict
the next word of a corpus has word vectors and recurrent layers that already read the language;
a classifier started from them needs fewer labelled examples than one started at random.

What moves: the language model's (tied) word vectors into the classifier's `embedding`, row by
row by word, and its recurrent layers, bottom first, into the classifier's recurrent layers (a
bidirectional layer's forward half; its backward half reads the other way, which the language
model never learned, and starts at random). The two models must have the same cell, word-vector
size and layer sizes: `encoder_differences` names what differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from models.language_model import EMBEDDING, recurrent, vocabulary
from models.layers import RNN, Bidirectional

CLASSIFIER_EMBEDDING = "embedding"


def classifier_recurrent(classifier: keras.Model) -> list[RNN]:
    """The classifier's recurrent layers that take pretrained weights, bottom first.

    Args:
        classifier: a model from models.sentiment.many_to_one.
    """
    found = []
    for layer in classifier.layers:
        if isinstance(layer, Bidirectional):
            found.append(layer.forward_layer)
        elif isinstance(layer, RNN):
            found.append(layer)
    return found


def _describe(layers: Sequence[RNN]) -> str:
    return ", ".join(f"{type(layer.cell).__name__}({layer.cell.units})" for layer in layers)


def encoder_differences(language_model: keras.Model, classifier: keras.Model) -> list[str]:
    """What keeps the language model's layers from fitting the classifier's; empty if nothing.

    Args:
        language_model: a built model from models.language_model.
        classifier: a built classifier (models.sentiment.many_to_one).
    """
    differences = []
    lm_dim = language_model.get_layer(EMBEDDING).dim
    classifier_dim = classifier.get_layer(CLASSIFIER_EMBEDDING).output_dim
    if lm_dim != classifier_dim:
        differences.append(f"word vectors of {lm_dim} (embedding_dim) in the language model, "
                           f"{classifier_dim} in the classifier")
    lm_layers, layers = recurrent(language_model), classifier_recurrent(classifier)
    if len(layers) > len(lm_layers):
        differences.append(f"{len(layers)} recurrent layers in the classifier, only "
                           f"{len(lm_layers)} in the language model")
    # The classifier may use fewer layers than the language model: the bottom ones.
    for i, (lm_layer, layer) in enumerate(zip(lm_layers, layers, strict=False)):
        lm_cell, cell = type(lm_layer.cell).__name__, type(layer.cell).__name__
        if lm_cell != cell or lm_layer.cell.units != layer.cell.units:
            differences.append(f"layer {i + 1} is {cell}({layer.cell.units}) in the classifier, "
                               f"{lm_cell}({lm_layer.cell.units}) in the language model")
            continue
        lm_shapes = [tuple(w.shape) for w in lm_layer.weights]
        shapes = [tuple(w.shape) for w in layer.weights]
        if lm_shapes != shapes:
            # Same cell and size but other inputs: a layer above a bidirectional one reads
            # both directions' outputs, twice the language model's.
            differences.append(f"layer {i + 1} has weights {shapes} in the classifier, "
                               f"{lm_shapes} in the language model (its input differs)")
    if differences:
        differences.append(f"(language model: {_describe(lm_layers)}; classifier: "
                           f"{_describe(layers)})")
    return differences


def copy_encoder(language_model: keras.Model, classifier: keras.Model,
                 classifier_words: Sequence[str], unknown: str = "[UNK]") -> list[str]:
    """Copy word vectors and recurrent layers into the classifier; return the layers' names.

    Call `encoder_differences` first: this assumes the shapes fit.

    Args:
        language_model: a trained model from models.language_model (its id 0 is its unknown
            word).
        classifier: the classifier to start from it.
        classifier_words: the classifier's vocabulary in id order (id 0 padding).
        unknown: the classifier's name of its out-of-vocabulary token.
    """
    lm_embedding = language_model.get_layer(EMBEDDING)
    lm_vectors = keras.ops.convert_to_numpy(lm_embedding.embeddings)
    lm_ids = {word: i for i, word in enumerate(vocabulary(language_model))}
    embedding = classifier.get_layer(CLASSIFIER_EMBEDDING)
    vectors = np.array(keras.ops.convert_to_numpy(embedding.embeddings))
    for i, word in enumerate(classifier_words):
        source = 0 if word == unknown else lm_ids.get(word)
        if i > 0 and source is not None:  # id 0 is padding, masked out
            vectors[i] = lm_vectors[source]
    embedding.embeddings.assign(vectors)
    copied = [embedding.name]
    pairs = zip(recurrent(language_model), classifier_recurrent(classifier), strict=False)
    for lm_layer, layer in pairs:
        layer.set_weights(lm_layer.get_weights())
        copied.append(layer.name)
    return copied


def words_found(language_model: keras.Model, words: Sequence[str]) -> float:
    """The share of `words` the language model has a vector for.

    Args:
        language_model: a model from models.language_model.
        words: e.g. a classifier's vocabulary or its training tokens.
    """
    known = set(vocabulary(language_model))
    return sum(word in known for word in words) / max(len(words), 1)
