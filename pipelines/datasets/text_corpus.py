"""Running text for language models: plain-text files, words, the vocabulary and token ids.

A corpus is a stream of rows (one per line of a .txt file, one per row of a .csv/.tsv/.jsonl
file, or a named data set's rows); each row is a document. With `documents=lines` every document
ends in the `<eos>` token (the model learns where documents end; WikiText-2's standard counting),
with `documents=running` the rows are one continuous text (lines wrapped in a paragraph).

Words are split on whitespace (`tokenize=whitespace`, for tokenised text such as WikiText-2) or
lower-cased with ASCII punctuation split off first (`tokenize=lower_punct`, for raw text such as
reviews). The same rules exist in Python (for reading the corpus) and as TensorFlow ops (for the
exported model's prompts), written once here so they agree.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.datasets import data_files
from serving.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

UNKNOWN = "<unk>"
END = "<eos>"
RESERVED = (UNKNOWN, END)  # ids 0 and 1
TEXT_FORMATS = (".txt", ".tokens")  # .tokens: WikiText's files
DOCUMENTS = ("lines", "running")
TOKENIZERS = ("whitespace", "lower_punct")
# ASCII punctuation but the apostrophe (don't, it's stay words); the same class in Python's re
# and in RE2 (TensorFlow's regex ops), whose \w would differ on non-ASCII letters.
_PUNCT = r"""([!"#$%&()*+,./:;<=>?@\[\\\]^_`{|}~-])"""
# What Python's str.split() splits on (no-break and ideographic spaces, U+0085, U+001C-1F, ...),
# written as the characters themselves, which both engines read; RE2's \s and TensorFlow's
# split know ASCII spaces only, so tf_words maps the others to " " first.
_SPACE = "[" + "".join(chr(c) for c in range(0x3001) if chr(c).isspace()) + "]"
_BREAK = f"<br{_SPACE}*/?>"  # IMDB's line breaks are HTML


def iter_text_lines(path: Path | str, column: str = "text") -> Iterator[tuple[int, dict]]:
    """(line, {column: text}) for each line of a .txt file (optionally .gz), streamed.

    Args:
        path: the file.
        column: the key each line is given (the config's text column).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file {path} does not exist", "check the path given to --data")
    data_files.file_format(path, TEXT_FORMATS)
    counter = [0]
    with data_files._open_binary(path) as handle:
        for text in data_files._lines(path, handle, counter):
            yield counter[0], {column: text.rstrip("\r\n")}


def words(text: str, tokenize: str) -> list[str]:
    """A text's words by the corpus's tokenize rule.

    Args:
        text: one document.
        tokenize: `whitespace` or `lower_punct`.
    """
    if tokenize == "lower_punct":
        text = re.sub(_PUNCT, r" \1 ", re.sub(_BREAK, " ", text.lower()))
    return text.split()


def tf_words(text: tf.Tensor, tokenize: str) -> tf.RaggedTensor:
    """`words` as TensorFlow ops: tf.string [batch] -> ragged [batch, (words)].

    Args:
        text: the texts.
        tokenize: `whitespace` or `lower_punct`.
    """
    import tensorflow as tf

    if tokenize == "lower_punct":
        text = tf.strings.lower(text, encoding="utf-8")
        text = tf.strings.regex_replace(text, _BREAK, " ")
        text = tf.strings.regex_replace(text, _PUNCT, r" \1 ")
    return tf.strings.split(tf.strings.regex_replace(text, _SPACE, " "))


def token_stream(documents: Iterable[str], tokenize: str, mode: str) -> Iterator[str]:
    """The words of the documents as one stream, `<eos>` after each with mode `lines`.

    Args:
        documents: the texts.
        tokenize: the tokenize rule.
        mode: `lines` or `running`.
    """
    for text in documents:
        yield from words(text, tokenize)
        if mode == "lines":
            yield END


def build_vocabulary(counts: collections.Counter, max_tokens: int) -> list[str]:
    """The vocabulary: `<unk>`, `<eos>`, then the most frequent words (ties by first seen).

    Args:
        counts: word counts of the training part.
        max_tokens: the vocabulary's size, the two reserved tokens included.
    """
    if max_tokens < len(RESERVED) + 1:
        raise UserError(f"max_tokens={max_tokens} leaves no room for words",
                        "use e.g. --set max_tokens=30000")
    common = (w for w, _ in counts.most_common() if w not in RESERVED)
    return [*RESERVED, *list(common)[:max_tokens - len(RESERVED)]]


def to_ids(tokens: Iterable[str], vocabulary: list[str]) -> np.ndarray:
    """Token ids (int32) of a token stream, unknown words as `<unk>` (id 0).

    Args:
        tokens: the words.
        vocabulary: the vocabulary, index order.
    """
    import numpy as np

    index = {w: i for i, w in enumerate(vocabulary)}
    return np.fromiter((index.get(t, 0) for t in tokens), dtype=np.int32)


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """The stream cut into `batch_size` equal contiguous rows [batch, length] (the rest dropped).

    Row r continues where its previous batch's window ended, so a recurrent state carried from
    one window to the next reads the text in order.

    Args:
        ids: token ids.
        batch_size: number of rows.
    """
    length = len(ids) // batch_size
    return ids[:length * batch_size].reshape(batch_size, length)
