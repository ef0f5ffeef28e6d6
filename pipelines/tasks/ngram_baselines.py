"""Count-based baselines a language model's perplexity is printed beside, on the same tokens.

Both are ours (a few NumPy lines; NLTK's `KneserNeyInterpolated` takes minutes per 100k tokens
on a 33k vocabulary): an add-one unigram and an interpolated Kneser-Ney bigram with absolute
discount 0.75 (Chen & Goodman 1998), whose continuation distribution is add-one smoothed so a
word never seen after another still has a probability. Both predict over the model's vocabulary
(unknown words as `<unk>`), so the numbers are comparable with the model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

DISCOUNT = 0.75


def pairs(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (previous, next) token pairs a model scores on a batchified stream [rows, length].

    Args:
        stream: token ids, one contiguous text per row.
    """
    return stream[:, :-1].reshape(-1), stream[:, 1:].reshape(-1)


def _perplexity(probabilities: np.ndarray) -> float:
    import numpy as np

    return float(np.exp(-np.mean(np.log(probabilities))))


def unigram(train: np.ndarray, vocabulary_size: int, following: np.ndarray) -> float:
    """Perplexity of an add-one unigram model of `train` on the tokens `following`.

    Args:
        train: training token ids.
        vocabulary_size: number of ids.
        following: the scored tokens.
    """
    import numpy as np

    counts = np.bincount(train, minlength=vocabulary_size).astype(np.float64)
    return _perplexity((counts[following] + 1) / (len(train) + vocabulary_size))


def bigram_kneser_ney(train: np.ndarray, vocabulary_size: int, previous: np.ndarray,
                      following: np.ndarray) -> float:
    """Perplexity of an interpolated Kneser-Ney bigram model of `train` on (previous, next) pairs.

    Args:
        train: training token ids (one contiguous stream).
        vocabulary_size: number of ids.
        previous: the context token of each scored pair.
        following: the scored token of each pair.
    """
    return _perplexity(bigram_kneser_ney_probabilities(train, vocabulary_size, previous,
                                                       following))


def bigram_kneser_ney_probabilities(train: np.ndarray, vocabulary_size: int,
                                    previous: np.ndarray, following: np.ndarray) -> np.ndarray:
    """P(next | previous) of each pair under the interpolated Kneser-Ney bigram of `train`.

    Args:
        train: training token ids.
        vocabulary_size: number of ids.
        previous: context ids.
        following: scored ids.
    """
    import numpy as np

    size = np.int64(vocabulary_size)
    keys, counts = np.unique(train[:-1].astype(np.int64) * size + train[1:], return_counts=True)
    first, second = keys // size, keys % size
    context = np.bincount(first, weights=counts, minlength=size)  # c(v)
    followers = np.bincount(first, minlength=size)  # N1+(v, .)
    preceders = np.bincount(second, minlength=size)  # N1+(., w)
    continuation = (preceders + 1) / (len(keys) + size)

    query = previous.astype(np.int64) * size + following
    at = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
    pair_count = np.where(keys[at] == query, counts[at], 0)
    c_v = context[previous]
    seen = c_v > 0
    safe = np.where(seen, c_v, 1)
    interpolated = (np.maximum(pair_count - DISCOUNT, 0) / safe
                    + DISCOUNT * followers[previous] / safe * continuation[following])
    return np.where(seen, interpolated, continuation[following])
