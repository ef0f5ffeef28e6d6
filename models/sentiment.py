"""Text classifiers taking raw strings: many-to-one (sequence) and one-to-one (no sequence).

The sentiment presets are their binary case (one sigmoid probability); the generic `classify`
task uses N softmax probabilities (pipelines.tasks.classify).

Text handling lives inside the model (TextVectorization with `standardize_review`), so an exported
model takes raw strings and needs no client-side preprocessing.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from models.characters import TokenFeatures, character_features, vocabulary_characters
from models.layers import Bidirectional, recurrent_layer
from models.unknown_words import UnknownWordDropout


@keras.saving.register_keras_serializable(package="rnnkit", name="standardize_review")
def standardize_review(text: tf.Tensor) -> tf.Tensor:
    """Lower-case a review, drop `<br />` tags, punctuation and symbols, join contractions.

    Only letters and digits survive: IMDB holds control characters such as U+0085, which Keras
    would write into the saved vocabulary file as line breaks, corrupting it.

    Args:
        text: string tensor of reviews.
    """
    return _letters_and_digits(tf.strings.lower(text, encoding="utf-8"))


def _letters_and_digits(text: tf.Tensor) -> tf.Tensor:
    """standardize_review without the lower-casing: the same tokens in their own case."""
    text = tf.strings.regex_replace(text, r"(?i)<br\s*/?>", " ")
    text = tf.strings.regex_replace(text, "['’]", "")  # "don't" -> "dont", one token
    return tf.strings.regex_replace(text, r"[^\p{L}\p{N}]+", " ")


TRUNCATIONS = ("first", "last")


@keras.saving.register_keras_serializable(package="rnnkit")
class TruncateTokens(keras.layers.Layer):
    """Keep `max_length` tokens of each review in right-padded tokens [batch, time] (ids
    padded with 0, or strings padded with "").

    Args:
        max_length: tokens kept per review; shorter reviews pass through unchanged.
        keep: `first` keeps the opening tokens; `last` keeps each review's closing tokens,
            counted from its own end (not the batch's padded end), where reviews tend to
            state their verdict.
        **kwargs: Keras layer arguments.
    """

    def __init__(self, max_length: int, keep: str = "first", **kwargs) -> None:
        super().__init__(**kwargs)
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}.")
        if keep not in TRUNCATIONS:
            raise ValueError(f"keep must be one of {TRUNCATIONS}, got {keep!r}.")
        self.max_length = max_length
        self.keep = keep

    def call(self, tokens):
        if self.keep == "first":
            return tokens[:, : self.max_length]
        # Token id 0 (or "" for token strings) is padding only, so a review's length is its
        # count of other tokens.
        padding = "" if tokens.dtype == tf.string else 0
        lengths = tf.reduce_sum(tf.cast(tokens != padding, tf.int32), axis=1)
        kept = tf.minimum(tf.shape(tokens)[1], self.max_length)
        starts = tf.maximum(lengths - self.max_length, 0)
        return tf.gather(tokens, starts[:, None] + tf.range(kept)[None, :], batch_dims=1)

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        return (input_shape[0], None if length is None else min(length, self.max_length))

    def get_config(self) -> dict:
        return {**super().get_config(), "max_length": self.max_length, "keep": self.keep}


@keras.saving.register_keras_serializable(package="rnnkit")
class ReviewTokens(keras.layers.Layer):
    """Texts [batch] -> their tokens [batch, time] as strings in their own case, padded with
    "": the tokens a vectorizer from `make_vectorizer` numbers, in the same places, for
    features of the tokens' characters, capitals included.

    The tokens are standardize_review's but for the lower-casing. Where lower-casing changes a
    text's token count (rare: "İ" lowers to "i" and a combining dot, which is no letter), that
    text's lower-cased tokens are taken, so the two always line up.

    Args:
        **kwargs: Keras layer arguments.
    """

    def call(self, texts):
        lower = tf.strings.split(standardize_review(texts))
        cased = tf.strings.split(_letters_and_digits(texts))
        shape = lower.bounding_shape()
        same = tf.equal(lower.row_lengths(), cased.row_lengths())[:, None]
        return tf.where(same, cased.to_tensor(default_value="", shape=shape),
                        lower.to_tensor(default_value="", shape=shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)


@keras.saving.register_keras_serializable(package="rnnkit")
class FirstTokens(TruncateTokens):
    """TruncateTokens keeping the first tokens: the layer's name in runs saved before `keep`.

    Args:
        max_length: tokens kept per review.
        **kwargs: Keras layer arguments.
    """

    def __init__(self, max_length: int, **kwargs) -> None:
        kwargs.pop("keep", None)
        super().__init__(max_length, keep="first", **kwargs)


class _MaskedPooling(keras.layers.Layer):
    """Pooling over the valid time steps of [batch, time, features] -> [batch, features]; a
    sequence without valid steps gives zeros (a text without a known word).

    Args:
        **kwargs: Keras layer arguments.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, sequences, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="rnnkit")
class MaskedMaxPooling(_MaskedPooling):
    """The largest value of each feature over the valid time steps of [batch, time, features].

    Keras's GlobalMaxPooling1D ignores the mask, so padding (zeros) would win over negative
    values.

    Args:
        **kwargs: Keras layer arguments.
    """

    def call(self, sequences, mask=None):
        if mask is None:
            return tf.reduce_max(sequences, axis=1)
        valid = tf.cast(mask, tf.bool)[:, :, None]
        lowest = tf.constant(sequences.dtype.min, sequences.dtype)
        pooled = tf.reduce_max(tf.where(valid, sequences, lowest), axis=1)
        return tf.where(tf.reduce_any(valid, axis=1), pooled, tf.zeros_like(pooled))


@keras.saving.register_keras_serializable(package="rnnkit")
class MaskedMeanPooling(_MaskedPooling):
    """The mean of each feature over the valid time steps of [batch, time, features].

    Keras's GlobalAveragePooling1D honours the mask but divides by the number of valid steps,
    so a text without a single known word (only punctuation, only emoji, empty) gave NaN, and
    NaN scores.

    Args:
        **kwargs: Keras layer arguments.
    """

    def call(self, sequences, mask=None):
        if mask is None:
            return tf.reduce_mean(sequences, axis=1)
        valid = tf.cast(mask, sequences.dtype)[:, :, None]
        return tf.math.divide_no_nan(tf.reduce_sum(sequences * valid, axis=1),
                                     tf.reduce_sum(valid, axis=1))


POOLINGS = ("last", "max", "max_mean")


def make_vectorizer(texts: tf.data.Dataset, max_tokens: int, output_mode: str = "int",
                    ngrams: int | None = None) -> keras.layers.TextVectorization:
    """A TextVectorization layer adapted on training texts only.

    Args:
        texts: batches of training review strings.
        max_tokens: vocabulary size, including padding and out-of-vocabulary tokens.
        output_mode: `int` (token ids for sequences), `multi_hot`, `count` or `tf_idf`.
        ngrams: also count word n-grams up to this length (bag-of-words modes).
    """
    vectorizer = keras.layers.TextVectorization(
        max_tokens=max_tokens, standardize=standardize_review, output_mode=output_mode,
        ngrams=ngrams, name="vectorizer")
    vectorizer.adapt(texts)
    return vectorizer


def many_to_one(vectorizer: keras.layers.TextVectorization, *, cell: str = "lstm",
                embedding_dim: int = 64, units: int = 64, layers: int = 1,
                dense_units: int = 64, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                max_length: int = 200, keep: str = "first", pooling: str = "last",
                train_embedding: bool = True, word_dropout: float = 0.0,
                seed: int | None = None, classes: int = 1, name: str | None = None,
                unknown_dropout: float = 0.0, char_features: bool = False,
                char_filters: int = 64, char_dim: int = 32, max_chars: int = 16) -> keras.Model:
    """Raw text -> tokens -> Embedding(mask_zero) -> stacked bidirectional RNN -> class scores.

    Args:
        vectorizer: adapted TextVectorization with output_mode `int`.
        cell: a key of models.layers.CELLS (`rnn`, `lstm`, `gru`, `ln_lstm` or a registered one).
        embedding_dim: size of each token's embedding.
        units: units of each direction of each recurrent layer.
        layers: stacked bidirectional layers; all but the last return sequences.
        dense_units: units of the dense layer before the output (0 for none).
        dropout: dropout on embeddings, recurrent inputs and the dense layer.
        recurrent_dropout: dropout on the recurrent state (slower: no fused input projection).
        max_length: tokens kept per review.
        keep: which tokens of a longer review: `first` or `last`.
        pooling: what of the last layer reaches the dense layers: `last`, the final state of
            each direction; `max`, each output feature's maximum over the valid steps (a
            telling phrase anywhere in a long review counts as much as the ending);
            `max_mean`, the maximum and the mean over the valid steps side by side.
        train_embedding: whether training updates the embedding; False keeps it as set (e.g.
            to pre-trained word vectors, so it cannot memorise the training reviews' rare words).
        word_dropout: share of whole tokens whose embedding is zeroed in training, so the
            model cannot hang its verdict on one word.
        seed: seed of the dropout masks.
        classes: 1 for a binary classifier's probability of class 1 (sigmoid, the sentiment
            presets), N >= 2 for the probabilities of N classes (softmax).
        name: the model's name; default `sentiment_bi<cell>`.
        unknown_dropout: share of training tokens replaced by the out-of-vocabulary token, so
            its vector learns to stand for words training never saw (small data sets).
        char_features: add features of each token's characters (models.characters) to its
            embedding, so words outside the vocabulary still say something. The characters
            are those of the vectorizer's vocabulary, which must come from `make_vectorizer`
            (its tokens are split again here to read their characters).
        char_filters: character convolution filters, the features of each token.
        char_dim: size of each character's embedding.
        max_chars: characters of each token read (its start).
    """
    if layers < 1:
        raise ValueError(f"layers must be at least 1, got {layers}.")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    text = keras.Input(shape=(), dtype="string", name="text")
    tokens = TruncateTokens(max_length, keep, name=f"{keep}_tokens")(vectorizer(text))
    if unknown_dropout:
        tokens = UnknownWordDropout(unknown_dropout, seed=seed, name="unknown_words")(tokens)
    x = keras.layers.Embedding(vectorizer.vocabulary_size(), embedding_dim, mask_zero=True,
                               trainable=train_embedding, name="embedding")(tokens)
    if char_features:
        _require_review_tokens(vectorizer)
        words = TruncateTokens(max_length, keep, name=f"{keep}_token_strings")(
            ReviewTokens(name="token_strings")(text))
        chars = character_features(
            words, _cased(vocabulary_characters(vectorizer.get_vocabulary()[2:])),
            char_dim=char_dim, char_filters=char_filters, max_chars=max_chars)
        x = TokenFeatures(name="token_features")([x, chars])
    if word_dropout:
        # One draw per token, shared by all its features: the word is dropped, not a feature.
        x = keras.layers.Dropout(word_dropout, noise_shape=(None, None, 1), seed=seed,
                                 name="word_dropout")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="embedding_dropout")(x)
    for i in range(layers):
        sequences = i < layers - 1 or pooling != "last"
        x = Bidirectional(recurrent_layer(cell, units, return_sequences=sequences,
                                          dropout=dropout, recurrent_dropout=recurrent_dropout,
                                          seed=seed, name=f"{cell}_{i + 1}"),
                          name=f"bidirectional_{i + 1}")(x)
    if pooling == "max":
        x = MaskedMaxPooling(name="max_over_time")(x)
    elif pooling == "max_mean":
        x = keras.layers.Concatenate(name="max_and_mean")([
            MaskedMaxPooling(name="max_over_time")(x),
            MaskedMeanPooling(name="mean_over_time")(x)])
    if dense_units:
        x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, seed=seed, name="dense_dropout")(x)
    return keras.Model(text, class_scores(x, classes), name=name or f"sentiment_bi{cell}")


def _cased(chars: list[str]) -> list[str]:
    """`chars` (of the lower-cased vocabulary) followed by their capitals."""
    capitals = [c.upper() for c in chars if len(c.upper()) == 1 and c.upper() != c]
    return chars + [c for c in capitals if c not in chars]


def _require_review_tokens(vectorizer: keras.layers.TextVectorization) -> None:
    """ValueError unless `vectorizer` splits texts as ReviewTokens does (make_vectorizer's)."""
    config = vectorizer.get_config()
    standardize = config.get("standardize")
    name = standardize if isinstance(standardize, str) else getattr(standardize, "__name__", "")
    if not str(name).endswith("standardize_review") or config.get("split") != "whitespace":
        raise ValueError(
            "character features read the tokens of make_vectorizer's TextVectorization "
            f"(standardize_review, whitespace split); this one has standardize={standardize!r}, "
            f"split={config.get('split')!r}. Build it with make_vectorizer or set "
            "char_features=False.")


def one_to_one(vectorizer: keras.layers.TextVectorization, *, cell: str = "lstm", units: int = 64,
               dropout: float = 0.0, seed: int | None = None, classes: int = 1,
               name: str | None = None) -> keras.Model:
    """Raw text -> one bag-of-words vector -> one recurrent step -> class scores (no sequence).

    Args:
        vectorizer: adapted TextVectorization with a bag-of-words output_mode.
        cell: a key of models.layers.CELLS (`rnn`, `lstm`, `gru`, `ln_lstm` or a registered one).
        units: units of the recurrent cell.
        dropout: dropout on the bag-of-words vector and the cell's output.
        seed: seed of the dropout masks.
        classes: 1 for a binary probability (sigmoid), N >= 2 for N probabilities (softmax).
        name: the model's name; default `sentiment_bow_<cell>`.
    """
    text = keras.Input(shape=(), dtype="string", name="text")
    # multi_hot and count come out as int64 at run time, whatever the symbolic dtype says.
    features = keras.ops.cast(vectorizer(text), "float32")
    if dropout:
        features = keras.layers.Dropout(dropout, seed=seed, name="input_dropout")(features)
    # A sequence of length one: the cell runs exactly once, from its zero initial state.
    step = keras.layers.Reshape((1, -1), name="one_step")(features)
    x = recurrent_layer(cell, units, name=cell)(step)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="output_dropout")(x)
    return keras.Model(text, class_scores(x, classes), name=name or f"sentiment_bow_{cell}")


def class_scores(features: keras.KerasTensor, classes: int) -> keras.KerasTensor:
    """The output layer: one sigmoid probability (classes=1) or N softmax probabilities.

    Args:
        features: the last hidden features [batch, features].
        classes: 1 (binary, the probability of class 1) or the number of classes N >= 2.
    """
    if classes < 1:
        raise ValueError(f"classes must be at least 1, got {classes}.")
    if classes == 1:
        return keras.layers.Dense(1, activation="sigmoid", name="probability")(features)
    return keras.layers.Dense(classes, activation="softmax", name="probabilities")(features)
