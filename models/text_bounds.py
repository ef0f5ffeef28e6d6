"""In-graph bounds on the text an exported model reads, so no request can make it work unboundedly.

Exports cut every text to a maximum number of tokens and refuse batches of more texts than a
limit (INVALID_ARGUMENT, one sentence naming both numbers). The text is first cut to a number of
characters proportional to the token limit, so that splitting a 60 MB "sentence" costs no more
than splitting a long one.
"""

from __future__ import annotations

import tensorflow as tf

# Characters read per allowed token: words average well under 10 characters, so the cut never
# drops a token the token limit would keep unless the text is mostly whitespace or huge words.
CHARS_PER_TOKEN = 32
# Characters of one token a model reads: longer tokens (no vocabulary holds them) are cut, so a
# single 60 MB "word" costs what a long word does.
MAX_TOKEN_CHARS = 64


def cut_characters(text: tf.Tensor, max_tokens: int) -> tf.Tensor:
    """The start of each text, long enough for `max_tokens` tokens (UTF-8 characters kept whole).

    Args:
        text: tf.string of any shape.
        max_tokens: the token limit the caller applies after splitting.
    """
    return tf.strings.substr(text, 0, max_tokens * CHARS_PER_TOKEN, unit="UTF8_CHAR")


def check_batch_size(text: tf.Tensor, max_texts: int) -> tf.Tensor:
    """`text` ([batch] or [batch, ...]), after asserting it holds at most `max_texts` rows.

    Args:
        text: the request's texts.
        max_texts: the most texts one request may hold.
    """
    count = tf.shape(text)[0]
    check = tf.debugging.Assert(
        count <= max_texts,
        ["the request holds", count, f"texts; at most {max_texts} are read per request "
         "(max_request_texts in the metadata of the export): send fewer per request"])
    with tf.control_dependencies([check]):
        return tf.identity(text)


def cut_tokens(tokens: tf.Tensor) -> tf.Tensor:
    """Each token cut to its first MAX_TOKEN_CHARS characters (UTF-8 characters kept whole).

    Args:
        tokens: tf.string tokens of any shape.
    """
    return tf.strings.substr(tokens, 0, MAX_TOKEN_CHARS, unit="UTF8_CHAR")
