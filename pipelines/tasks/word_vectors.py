"""Word vectors learned without labels: positive PMI of co-occurrence counts, reduced by SVD.

Counts pairs of words within a window over unlabelled text, turns them into positive pointwise
mutual information (context counts smoothed by ^0.75), and keeps the top singular directions,
U * sqrt(S) (Levy, Goldberg and Dagan 2015: with these choices PPMI-SVD matches word2vec on
similarity tasks). Plain NumPy: no training loop, the same vectors for the same text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

log = logging.getLogger("pipelines.tasks.word_vectors")

# Token ids below this are TextVectorization's padding (0) and out-of-vocabulary (1) tokens.
FIRST_WORD_ID = 2


def token_stream(texts: tf.data.Dataset, vectorizer: keras.layers.TextVectorization,
                 window: int) -> np.ndarray:
    """All texts' token ids in one int32 array, each text followed by `window` padding ids.

    Args:
        texts: batches of strings.
        vectorizer: adapted TextVectorization with output_mode `int`.
        window: padding between texts, so that no pair spans two texts.
    """
    import tensorflow as tf

    chunks = []
    for batch in texts:
        tokens = tf.RaggedTensor.from_tensor(vectorizer(batch), padding=0)
        gap = tf.zeros([tokens.nrows(), window], tokens.dtype)
        chunks.append(tf.concat([tokens, gap], axis=1).flat_values.numpy().astype(np.int32))
    return np.concatenate(chunks) if chunks else np.zeros([0], np.int32)


def cooccurrences(stream: np.ndarray, vocabulary_size: int, window: int) -> np.ndarray:
    """Symmetric co-occurrence counts of words at most `window` apart, weighted 1 / distance.

    Args:
        stream: token ids (see token_stream); ids below 2 never count.
        vocabulary_size: number of ids; the result is [vocabulary_size, vocabulary_size].
        window: largest distance counted.
    """
    counts = np.zeros(vocabulary_size * vocabulary_size, np.float32)
    for distance in range(1, window + 1):
        left, right = stream[:-distance], stream[distance:]
        words = (left >= FIRST_WORD_ID) & (right >= FIRST_WORD_ID)
        pairs = left[words].astype(np.int64) * vocabulary_size + right[words]
        # Sorting is cheaper than a bincount over vocabulary_size**2 bins for each distance.
        pair, count = np.unique(pairs, return_counts=True)
        weight = count.astype(np.float32) / distance
        counts[pair] += weight
        # The mirrored pair (right, left): symmetric counts without a second square matrix.
        counts[pair % vocabulary_size * vocabulary_size + pair // vocabulary_size] += weight
    return counts.reshape(vocabulary_size, vocabulary_size)


def ppmi(counts: np.ndarray, smoothing: float = 0.75) -> np.ndarray:
    """Positive pointwise mutual information of a co-occurrence matrix, computed in place.

    Args:
        counts: [words, contexts] float32 co-occurrence counts; overwritten and returned.
        smoothing: exponent on context counts; below 1 it damps PMI's bias towards rare contexts.
    """
    total = counts.sum(dtype=np.float64)
    context = counts.sum(axis=0, keepdims=True, dtype=np.float64) ** smoothing
    # In place: the matrix is vocabulary**2 floats (3.6 GB for 30k words). Unseen words give
    # log(0); their rows and columns end up 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_word = np.log(counts.sum(axis=1, keepdims=True, dtype=np.float64) / total)
        log_context = np.log(context / context.sum())
        counts /= np.float32(total)
        np.log(counts, out=counts)
        counts -= log_word.astype(np.float32)
        counts -= log_context.astype(np.float32)
    # fmax, unlike maximum, turns the NaN of never-seen words into 0 as well as -inf.
    return np.fmax(counts, np.float32(0.0), out=counts)


def truncated_svd_vectors(matrix: np.ndarray, dim: int, seed: int,
                          power_iterations: int = 4) -> np.ndarray:
    """Rows of U * sqrt(S) for the top `dim` singular directions, by randomized SVD.

    Args:
        matrix: square [words, contexts] matrix.
        dim: size of the vectors.
        seed: seed of the random projection.
        power_iterations: passes that sharpen the subspace (Halko, Martinsson and Tropp 2011).
    """
    rng = np.random.default_rng(seed)
    sketch = min(matrix.shape[1], dim + 16)
    basis, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], sketch),
                                                         dtype=np.float32))
    for _ in range(power_iterations):
        basis, _ = np.linalg.qr(matrix.T @ basis)
        basis, _ = np.linalg.qr(matrix @ basis)
    small_u, singular, _ = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    return ((basis @ small_u[:, :dim]) * np.sqrt(singular[:dim])).astype(np.float32)


def ppmi_svd(texts: Iterable[tf.data.Dataset], vectorizer: keras.layers.TextVectorization,
             dim: int, window: int = 5, seed: int = 0) -> np.ndarray:
    """Unit-length word vectors, one row per vocabulary id, learned from unlabelled texts.

    Rows of padding, out-of-vocabulary and never-seen words are zero (see `apply_to_embedding`).

    Args:
        texts: datasets of string batches (e.g. the training reviews and the unlabelled ones).
        vectorizer: adapted TextVectorization with output_mode `int`; its ids index the rows.
        dim: size of the vectors, the embedding size.
        window: words at most this far apart co-occur.
        seed: seed of the randomized SVD.
    """
    start = time.perf_counter()
    vocabulary_size = vectorizer.vocabulary_size()
    if dim >= vocabulary_size:
        raise ValueError(f"dim={dim} must be smaller than the vocabulary ({vocabulary_size}).")
    stream = np.concatenate([token_stream(t, vectorizer, window) for t in texts])
    counts = cooccurrences(stream, vocabulary_size, window)
    log.info("counted co-occurrences of %d tokens in %.0f s", stream.size,
             time.perf_counter() - start)
    del stream
    seen = counts.sum(axis=1) > 0
    vectors = truncated_svd_vectors(ppmi(counts), dim, seed)
    del counts
    # Unseen rows would otherwise keep rounding noise, which normalising blows up to length 1.
    vectors[~seen] = 0.0
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    log.info("word vectors %s ready after %.0f s", vectors.shape, time.perf_counter() - start)
    return vectors


def apply_to_embedding(embedding: keras.layers.Embedding, vectors: np.ndarray) -> int:
    """Overwrite an embedding's rows with the given vectors where a vector exists.

    Rows whose vector is zero (padding, out-of-vocabulary, unseen words) keep their random
    initialisation. Returns the number of rows replaced.

    Args:
        embedding: built Embedding layer with one row per vocabulary id.
        vectors: [vocabulary, dim] vectors, e.g. from `ppmi_svd`.
    """
    table = embedding.get_weights()[0]
    if table.shape != vectors.shape:
        raise ValueError(f"embedding {table.shape} and vectors {vectors.shape} differ in shape.")
    known = np.linalg.norm(vectors, axis=1) > 0
    table[known] = vectors[known]
    embedding.set_weights([table])
    return int(known.sum())
