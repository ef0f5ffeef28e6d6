"""Sequence tagger (many-to-many, synchronised): tokens -> one tag per token.

Raw token strings in ([batch, time], padded with ""), so an exported model needs no client-side
vocabulary: word ids (lower-cased) and, optionally, character features of each token (a
convolution over its characters, max-pooled) feed a stacked bidirectional RNN of our own layers
and a per-step softmax; padding is masked all the way to the loss.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from models.characters import TokenFeatures, character_features
from models.label_names import LabelNames
from models.layers import Bidirectional, recurrent_layer
from models.unknown_words import UnknownWordDropout


@keras.saving.register_keras_serializable(package="rnnkit")
class LowerTokens(keras.layers.Layer):
    """Lower-case token strings (UTF-8), so `The` and `the` share a word vector.

    Args:
        **kwargs: Keras layer arguments.
    """

    def call(self, tokens):
        return tf.strings.lower(tokens, encoding="utf-8")

    def compute_output_shape(self, input_shape):
        return input_shape


def tagger(words: list[str], chars: list[str], tags: list[str], *, cell: str = "lstm",
           embedding_dim: int = 100, char_dim: int = 32, char_filters: int = 64,
           max_chars: int = 16, units: int = 128, layers: int = 1, dropout: float = 0.3,
           word_dropout: float = 0.0, seed: int | None = None) -> keras.Model:
    """Tokens -> word (+ character) features -> stacked BiRNN -> per-token tag probabilities.

    Args:
        words: the word vocabulary (lower-cased); others map to one out-of-vocabulary id.
        chars: the character vocabulary; empty turns character features off.
        tags: the tag names, in output order.
        cell: a key of models.layers.CELLS (`rnn`, `lstm`, `gru`, `ln_lstm` or a registered one).
        embedding_dim: size of each word's embedding.
        char_dim: size of each character's embedding.
        char_filters: character convolution filters (the token's character features).
        max_chars: characters of each token the convolution reads.
        units: units of each direction of each recurrent layer.
        layers: stacked bidirectional layers.
        dropout: dropout on the token features, the recurrent inputs and the RNN's output.
        word_dropout: share of training words replaced by the unknown word.
        seed: seed of the dropout masks.
    """
    if layers < 1:
        raise ValueError(f"layers must be at least 1, got {layers}.")
    tokens = keras.Input(shape=(None,), dtype="string", name="tokens")
    # "" is padding (id 0, masked); unknown words share id 1.
    word_ids = keras.layers.StringLookup(vocabulary=list(words), mask_token="", num_oov_indices=1,
                                         name="word_ids")(LowerTokens(name="lower")(tokens))
    if word_dropout:
        word_ids = UnknownWordDropout(word_dropout, seed=seed, name="unknown_words")(word_ids)
    x = keras.layers.Embedding(len(words) + 2, embedding_dim, mask_zero=True,
                               name="word_embedding")(word_ids)
    if chars:
        c = character_features(tokens, chars, char_dim=char_dim, char_filters=char_filters,
                          max_chars=max_chars)
        x = TokenFeatures(name="token_features")([x, c])
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="feature_dropout")(x)
    for i in range(layers):
        x = Bidirectional(recurrent_layer(cell, units, return_sequences=True, dropout=dropout,
                                          seed=seed, name=f"{cell}_{i + 1}"),
                          name=f"bidirectional_{i + 1}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="output_dropout")(x)
    scores = keras.layers.Dense(len(tags), activation="softmax", name="tag_probabilities")(x)
    scores = LabelNames(tags, name="label_names")(scores)
    return keras.Model(tokens, scores, name=f"tagger_bi{cell}")
