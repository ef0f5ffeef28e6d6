"""Text standardisation and vocabularies for translation, all in TensorFlow ops.

Every function here runs inside a graph, so the exported translator maps raw strings to strings
with the same processing the model was trained on.
"""

from __future__ import annotations

import unicodedata

import keras
import numpy as np
import tensorflow as tf

START = "[START]"
END = "[END]"
# keras TextVectorization reserves index 0 for padding and 1 for unknown tokens.
PAD_ID = 0
UNKNOWN = "[UNK]"

_MARKS = (0x300, 0x370)  # Unicode's block of combining diacritical marks


def _composition_table() -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys `base * 256 + (mark - 0x300)` and the precomposed code point each maps to."""
    keys, values = [], []
    for base in range(0x20, 0x2000):
        for mark in range(*_MARKS):
            composed = unicodedata.normalize("NFC", chr(base) + chr(mark))
            if len(composed) == 1:
                keys.append(base * 256 + mark - _MARKS[0])
                values.append(ord(composed))
    order = np.argsort(keys)
    return np.asarray(keys, np.int64)[order], np.asarray(values, np.int32)[order]


_KEYS, _VALUES = _composition_table()


def _compose_once(codes: tf.Tensor) -> tf.Tensor:
    """Merge each letter followed by a combining mark into its precomposed letter, one mark deep.

    Args:
        codes: int32 code points [batch, length], padded with -1.
    """
    base, mark = codes[:, :-1], codes[:, 1:]
    is_mark = (mark >= _MARKS[0]) & (mark < _MARKS[1])
    key = tf.cast(base, tf.int64) * 256 + tf.cast(mark - _MARKS[0], tf.int64)
    keys = tf.constant(_KEYS)
    index = tf.minimum(tf.searchsorted(keys, tf.reshape(key, [-1])), len(_KEYS) - 1)
    index = tf.reshape(index, tf.shape(key))
    found = is_mark & (tf.gather(keys, index) == key)
    composed = tf.where(found, tf.gather(tf.constant(_VALUES), index), base)
    # A mark merged into the letter before it is dropped (marked -1, padding).
    codes = tf.concat([composed, codes[:, -1:]], axis=1)
    dropped = tf.concat([tf.zeros_like(found[:, :1]), found], axis=1)
    return tf.where(dropped, -1, codes)


def compose_accents(text: tf.Tensor) -> tf.Tensor:
    """Unicode NFC for letters with accents: `e` + U+0301 becomes `é` (as macOS keyboards send).

    Core TensorFlow has no normalisation op; this covers every letter below U+2000 followed by
    up to two combining marks, which is all Spanish and English text needs.

    Args:
        text: tf.string tensor [batch].
    """
    codes = tf.strings.unicode_decode(text, "UTF-8", errors="replace").to_tensor(-1)
    codes = tf.concat([codes, -tf.ones_like(codes[:, :1])], axis=1)  # keeps length >= 1
    for _ in range(2):
        codes = _compose_once(codes)
        # Move the dropped marks out of the way so a second mark meets its letter.
        codes = tf.ragged.boolean_mask(codes, codes >= 0).to_tensor(-1)
        codes = tf.concat([codes, -tf.ones_like(codes[:, :1])], axis=1)
    return tf.strings.unicode_encode(tf.ragged.boolean_mask(codes, codes >= 0), "UTF-8")


def standardize(text: tf.Tensor) -> tf.Tensor:
    """Lower-case, NFC, every punctuation mark (`¿ ¡ . ,` ...) its own space-separated token.

    Letters keep their accents; apostrophes and hyphens inside words stay (`don't`, `e-mail`).

    Args:
        text: tf.string tensor [batch] of raw sentences.
    """
    text = tf.strings.lower(compose_accents(text), encoding="utf-8")
    text = tf.strings.regex_replace(text, "[’‘`´]", "'")
    text = tf.strings.regex_replace(text, r"\p{Cf}", "")  # zero-width spaces and the like
    text = tf.strings.regex_replace(text, r"([^\pL\pN\pM\s'-])", r" \1 ")
    text = tf.strings.regex_replace(text, r"\s+", " ")
    return tf.strings.strip(text)


def add_start_end(text: tf.Tensor) -> tf.Tensor:
    """Wrap standardised sentences in the start and end tokens the decoder uses.

    Args:
        text: standardised tf.string tensor [batch].
    """
    return tf.strings.join([START, text, END], separator=" ")


def detokenize(tokens: tf.Tensor) -> tf.Tensor:
    """Join output tokens into a readable sentence: no space before `. , ? !`, capitals for the
    first letter and for `I`.

    Args:
        tokens: tf.string tensor [batch, length]; empty strings are skipped.
    """
    text = tf.strings.reduce_join(tokens, axis=-1, separator=" ")
    text = tf.strings.regex_replace(text, r"\s+", " ")
    text = tf.strings.regex_replace(text, r" ([.,!?;:%)»])", r"\1")
    text = tf.strings.regex_replace(text, r"([¿¡(«$]) ", r"\1")
    # English's "I" is the one word the lower-cased model writes that is always capitalised.
    text = tf.strings.regex_replace(text, r"(^| )i( |'|$)", r"\1I\2")
    text = tf.strings.strip(text)
    length = tf.strings.length(text, unit="UTF8_CHAR")
    split = tf.minimum(length, 1)  # empty outputs stay empty
    first = tf.strings.substr(text, tf.zeros_like(split), split, unit="UTF8_CHAR")
    rest = tf.strings.substr(text, split, length, unit="UTF8_CHAR")
    return tf.strings.join([tf.strings.upper(first, encoding="utf-8"), rest])


def make_vectorizer(sentences: tf.data.Dataset, max_tokens: int) -> keras.layers.TextVectorization:
    """A whitespace TextVectorization adapted on standardised sentences (training split only).

    Args:
        sentences: standardised sentences (with start/end tokens on the target side), batched.
        max_tokens: vocabulary size, padding and unknown included.
    """
    vectorizer = keras.layers.TextVectorization(
        max_tokens=max_tokens, standardize=None, split="whitespace", ragged=True)
    vectorizer.adapt(sentences)
    return vectorizer
