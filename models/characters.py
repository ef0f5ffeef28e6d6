"""Character features of tokens: each token's characters, embedded, convolved and max-pooled.

A word the vocabulary lacks (a name, a number, a misspelling) still has characters: prefixes,
suffixes and shape carry over from words seen in training (Ma & Hovy 2016's character CNN).
The tagger and the many-to-one classifier share this block: token strings [batch, time] padded
with "" in, [batch, time, filters] features out, joined to the word embeddings by TokenFeatures,
which keeps the words' mask over the padding.
"""

from __future__ import annotations

import collections

import keras
import tensorflow as tf


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
        # An empty batch loses the time axis in to_tensor ([0, 0, c] from [0, time] tokens),
        # and the features would no longer line up with the word embeddings.
        chars = tf.reshape(chars, tf.concat([tf.shape(tokens), tf.shape(chars)[2:]], 0))
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
        pooled = tf.reduce_max(features, axis=2)
        width = features.shape[-1]
        if width is None:
            return pooled
        # TensorFlow's oneDNN Conv2D (2.21, on CPUs with AVX-512) answers an empty batch with
        # its input's channels instead of its filters': an empty batch gets the declared width,
        # so it still lines up with the word embeddings. (A reshape would do, but TensorFlow's
        # graph optimizer drops a reshape to the shape it already believes.)
        return tf.cond(tf.shape(pooled)[0] > 0, lambda: pooled,
                       lambda: tf.zeros([0, tf.shape(pooled)[1], width], pooled.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[3])


@keras.saving.register_keras_serializable(package="rnnkit")
class TokenFeatures(keras.layers.Concatenate):
    """[word embeddings, character features] side by side, masked where the words are.

    Keras's Concatenate unmasks a step if any input leaves it unmasked, and the character
    features carry no mask: padding would then reach the recurrent layers as tokens (and the
    backward direction would start on it), making a sentence's outputs depend on the longest
    one in its batch. Here the first input's mask is the result's.

    Args:
        **kwargs: Concatenate's arguments.
    """

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[0]


def vocabulary_characters(words: list[str], min_count: int = 1) -> list[str]:
    """The characters of `words`, most frequent first (ties in order of first appearance).

    Args:
        words: e.g. a word vocabulary.
        min_count: characters seen fewer times are left out (they share the unknown id).
    """
    counts = collections.Counter(char for word in words for char in word)
    return [c for c, n in counts.most_common() if n >= min_count]


def character_features(tokens: keras.KerasTensor, chars: list[str], *, char_dim: int = 32,
                       char_filters: int = 64, max_chars: int = 16) -> keras.KerasTensor:
    """Token strings [batch, time] -> character features [batch, time, char_filters].

    Args:
        tokens: token strings padded with "".
        chars: the character vocabulary ("" is padding, others share one unknown id).
        char_dim: size of each character's embedding.
        char_filters: convolution filters, the features of each token.
        max_chars: characters of each token the convolution reads (its start).
    """
    if not chars:
        raise ValueError("character_features needs a character vocabulary; got none.")
    char_ids = keras.layers.StringLookup(vocabulary=list(chars), mask_token="",
                                         num_oov_indices=1, name="char_ids")(
        TokenChars(max_chars, name="chars")(tokens))
    c = keras.layers.Embedding(len(chars) + 2, char_dim, name="char_embedding")(char_ids)
    # A 1x3 kernel over (token, character) convolves each token's characters alone.
    c = keras.layers.Conv2D(char_filters, (1, 3), padding="same", activation="relu",
                            name="char_conv")(c)
    return MaxOverChars(name="char_features")(c)
