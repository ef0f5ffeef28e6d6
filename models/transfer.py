"""Start a classifier from a trained language model: its word vectors and recurrent layers.

Language-model pretraining (Dai & Le 2015; Howard & Ruder 2018): a model that learned to predict
the next word of a corpus has word vectors and recurrent layers that already read the language;
a classifier started from them needs fewer labelled examples than one started at random.

What moves: the language model's (tied) word vectors into the classifier's `embedding`, row by
row by word (matched through the classifier's own tokenizer, `shared_rows`), and its recurrent
layers, bottom first, into the classifier's recurrent layers (a bidirectional layer's forward
half; its backward half reads the other way, which the language model never learned, and starts
at random). The two models must have the same cell, word-vector size and layer sizes:
`encoder_differences` names what differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

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
    if differences and max(len(lm_layers), len(layers)) > 1:  # one layer each: said above
        differences.append(f"(language model: {_describe(lm_layers)}; classifier: "
                           f"{_describe(layers)})")
    return differences


def shared_rows(language_model: keras.Model,
                vectorizer: keras.layers.TextVectorization) -> dict[int, int]:
    """Each classifier word id the language model knows -> the language model's row for it.

    Every language-model word goes through the classifier's own vectorizer (its
    standardisation and split), so words the two runs tokenise differently still meet: the
    language model's "don't" starts a classifier's "dont", its "'s" a classifier's "s". Where
    several meet one classifier word, the most frequent wins (the lowest row: the vocabulary is
    in order of frequency). Words that become several tokens, none, or the classifier's unknown
    token are left out; the language model's unknown word (row 0) starts the classifier's.

    Args:
        language_model: a model from models.language_model (row 0 its unknown word, row 1 its
            end of document).
        vectorizer: the classifier's adapted TextVectorization (id 0 padding, 1 unknown).
    """
    words = vocabulary(language_model)
    ids = keras.ops.convert_to_numpy(vectorizer(tf.constant(words[2:])))
    rows = {1: 0}
    for row, tokens in enumerate(ids, start=2):
        tokens = tokens[tokens > 0]
        if len(tokens) == 1 and tokens[0] > 1:
            rows.setdefault(int(tokens[0]), row)
    return rows


def copy_encoder(language_model: keras.Model, classifier: keras.Model,
                 rows: dict[int, int]) -> list[str]:
    """Copy word vectors and recurrent layers into the classifier; return the layers' names.

    Call `encoder_differences` first: this assumes the shapes fit.

    Args:
        language_model: a trained model from models.language_model.
        classifier: the classifier to start from it.
        rows: classifier word id -> language-model row (`shared_rows`); the other words keep
            their random start.
    """
    lm_vectors = keras.ops.convert_to_numpy(language_model.get_layer(EMBEDDING).embeddings)
    embedding = classifier.get_layer(CLASSIFIER_EMBEDDING)
    vectors = np.array(keras.ops.convert_to_numpy(embedding.embeddings))
    for word_id, row in rows.items():
        vectors[word_id] = lm_vectors[row]
    embedding.embeddings.assign(vectors)
    copied = [embedding.name]
    pairs = zip(recurrent(language_model), classifier_recurrent(classifier), strict=False)
    for lm_layer, layer in pairs:
        layer.set_weights(lm_layer.get_weights())
        copied.append(layer.name)
    return copied
