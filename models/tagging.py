"""Sequence tagger (many-to-many, synchronised): tokens -> one tag per token.

Raw token strings in ([batch, time], padded with ""), so an exported model needs no client-side
vocabulary: word ids (lower-cased) and, optionally, character features of each token (a
convolution over its characters, max-pooled) feed a stacked bidirectional RNN of our own layers
and a per-step softmax; padding is masked all the way to the loss.
"""

from __future__ import annotations

import keras
import tensorflow as tf

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


@keras.saving.register_keras_serializable(package="rnnkit")
class TokenChars(keras.layers.Layer):
    """Split tokens [batch, time] into their first `max_chars` characters [batch, time, chars],
    padded with "".

    Args:
        max_chars: characters kept per token (the start of longer ones).
        **kwargs: Keras layer arguments.
    """

    def __init__(self, max_chars: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}.")
        self.max_chars = max_chars

    def call(self, tokens):
        chars = tf.strings.unicode_split(tokens, "UTF-8")
        chars = chars.to_tensor(default_value="")
        chars = chars[:, :, : self.max_chars]
        # At least one character column, so a batch of empty strings still has the axis.
        width = tf.maximum(tf.shape(chars)[2], 1)
        pad = width - tf.shape(chars)[2]
        return tf.pad(chars, [[0, 0], [0, 0], [0, pad]], constant_values="")

    def compute_output_shape(self, input_shape):
        return (*input_shape, None)

    def get_config(self) -> dict:
        return {**super().get_config(), "max_chars": self.max_chars}


@keras.saving.register_keras_serializable(package="rnnkit")
class MaxOverChars(keras.layers.Layer):
    """The largest value of each feature over a token's characters [batch, time, chars, f].

    Args:
        **kwargs: Keras layer arguments.
    """

    def call(self, features):
        return tf.reduce_max(features, axis=2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[3])


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
        char_ids = keras.layers.StringLookup(vocabulary=list(chars), mask_token="",
                                             num_oov_indices=1, name="char_ids")(
            TokenChars(max_chars, name="chars")(tokens))
        c = keras.layers.Embedding(len(chars) + 2, char_dim, name="char_embedding")(char_ids)
        # A 1x3 kernel over (token, character) convolves each token's characters alone.
        c = keras.layers.Conv2D(char_filters, (1, 3), padding="same", activation="relu",
                                name="char_conv")(c)
        c = MaxOverChars(name="char_features")(c)
        x = keras.layers.Concatenate(name="token_features")([x, c])
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
