"""Word-level language model: embedding -> stacked recurrent layers -> scores over the vocabulary.

The input and output embeddings are one matrix (Press & Wolf 2017): `TiedEmbedding` looks words
up and, called with `scores=True`, scores hidden states against every word's vector. The last
recurrent layer therefore has the embedding's size. Dropout sits on the embeddings, between the
layers, before the output, and (the cell's `recurrent_dropout`) on the recurrent state: the
cheap parts of AWD-LSTM (Merity et al. 2017).

The training model takes token ids as [batch, time, 1] (pipelines.training.tbptt chunks inputs
of shape [batch, time, features]) and returns the top layer's hidden states; the loss (exact or
sampled softmax) scores them against the tied embedding. Its recurrent layers also
return their final states, which the training graph ignores and `run` uses: evaluation carries
them across a whole split, generation across the steps of a continuation.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from models import decoding
from models.layers import recurrent_layer

EMBEDDING = "embedding"


@keras.saving.register_keras_serializable(package="rnnkit")
class TiedEmbedding(keras.layers.Layer):
    """Word vectors that also score the next word (tied input and output embeddings).

    Called on ids [..] it returns their vectors [.., dim]; called on vectors [.., dim] with
    `scores=True` it returns logits [.., vocabulary] (a dot product with every word's vector
    plus a per-word bias).

    Args:
        vocabulary: the words in id order (id 0 the unknown word); kept in the config, so a
            saved model carries its vocabulary.
        dim: size of each word vector.
        **kwargs: Keras layer arguments (name, dtype, trainable).
    """

    def __init__(self, vocabulary: list[str], dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        self.dim = dim
        # Scores of masked (padding) steps are ignored downstream; the mask passes through.
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        # Small uniform vectors, as the classic word-level LMs (Zaremba et al. 2014) start.
        self.embeddings = self.add_weight(
            shape=(len(self.vocabulary), self.dim), name="embeddings",
            initializer=keras.initializers.RandomUniform(-0.1, 0.1))
        self.bias = self.add_weight(shape=(len(self.vocabulary),), name="output_bias",
                                    initializer="zeros")

    def call(self, inputs: Any, scores: bool = False) -> Any:
        if scores:
            return ops.matmul(inputs, ops.transpose(self.embeddings)) + self.bias
        return ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0)

    def get_config(self) -> dict:
        return {**super().get_config(), "vocabulary": self.vocabulary, "dim": self.dim}


def negative_log_likelihood(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """-log softmax(logits)[label] for each position, for scoring without a gradient.

    The same number as `tf.nn.sparse_softmax_cross_entropy_with_logits` (logsumexp minus the
    label's score), without the softmax-minus-one-hot array that op also writes for its
    gradient: over a vocabulary that array is as large as the logits, and skipping it took a
    WikiText-2 validation window of the quick profile from 1.02 s to about 0.7 s.

    Args:
        logits: scores [.., vocabulary].
        labels: int ids [..].
    """
    labels = tf.cast(labels, tf.int32)
    chosen = tf.gather(logits, labels, batch_dims=len(labels.shape))
    return tf.reduce_logsumexp(logits, axis=-1) - chosen


@keras.saving.register_keras_serializable(package="rnnkit")
class LanguageModel(keras.Model):
    """The language model: ids [batch, time, 1] -> hidden states [batch, time, embedding_dim].

    The scores over the vocabulary are the tied embedding's (`run` computes them); the training
    loss is computed from the hidden states in `compute_loss`: the exact softmax, or with
    `sampled_words` a sampled softmax (Jean et al. 2015) over that many words drawn from a
    log-uniform (Zipf) distribution, which fits a vocabulary in order of frequency. Validation
    (training=False) always takes the exact softmax, so val_loss is the true cross-entropy.

    Args:
        vocabulary: the words in id order, the most frequent first after the reserved ones.
        cell: recurrent cell, a key of models.layers.CELLS.
        embedding_dim: word vector size (also the last recurrent layer's, for the tied output).
        units: size of the recurrent layers below the last.
        layers: number of stacked recurrent layers.
        dropout: dropout between layers and before the output.
        embedding_dropout: dropout on the word vectors.
        recurrent_dropout: dropout on each layer's recurrent state.
        seed: seeds the dropout masks.
        sampled_words: words sampled per training step for the sampled softmax; 0 (or at least
            the vocabulary's size) for the exact softmax.
        **kwargs: Keras model arguments (name, trainable).
    """

    def __init__(self, vocabulary: list[str], cell: str = "lstm", embedding_dim: int = 200,
                 units: int = 200, layers: int = 2, dropout: float = 0.3,
                 embedding_dropout: float = 0.1, recurrent_dropout: float = 0.0, seed: int = 42,
                 sampled_words: int = 0, **kwargs: Any) -> None:
        tokens = keras.Input((None, 1), dtype="int32", name="tokens")
        embedding = TiedEmbedding(vocabulary, embedding_dim, name=EMBEDDING)
        x = embedding(keras.layers.Reshape((-1,), name="ids")(tokens))
        x = keras.layers.Dropout(embedding_dropout, seed=seed, name="embedding_dropout")(x)
        for i in range(layers):
            size = embedding_dim if i == layers - 1 else units
            layer = recurrent_layer(cell, size, return_sequences=True, return_state=True,
                                    recurrent_dropout=recurrent_dropout, seed=seed + 1 + i,
                                    name=f"rnn_{i}")
            x = layer(x)[0]
            x = keras.layers.Dropout(dropout, seed=seed + 100 + i, name=f"dropout_{i}")(x)
        super().__init__(tokens, x, **kwargs)
        self.lm_config = {"vocabulary": list(vocabulary), "cell": cell,
                          "embedding_dim": embedding_dim, "units": units, "layers": layers,
                          "dropout": dropout, "embedding_dropout": embedding_dropout,
                          "recurrent_dropout": recurrent_dropout, "seed": seed,
                          "sampled_words": sampled_words}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        embedding = self.get_layer(EMBEDDING)
        hidden = tf.reshape(y_pred, [-1, embedding.dim])
        labels = tf.reshape(tf.cast(y, tf.int64), [-1])
        sampled = self.lm_config["sampled_words"]
        if training and 0 < sampled < len(embedding.vocabulary):
            losses = tf.nn.sampled_softmax_loss(
                weights=embedding.embeddings, biases=embedding.bias, labels=labels[:, None],
                inputs=hidden, num_sampled=sampled, num_classes=len(embedding.vocabulary),
                seed=self.lm_config["seed"])
        else:
            logits = embedding(hidden, scores=True)
            # Training needs the fused op's gradient; validation needs only the number.
            losses = (tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
                      if training else negative_log_likelihood(logits, labels))
        return tf.reduce_mean(losses)

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable, **self.lm_config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_language_model(vocabulary: list[str], *, cell: str = "lstm", embedding_dim: int = 200,
                         units: int = 200, layers: int = 2, dropout: float = 0.3,
                         embedding_dropout: float = 0.1, recurrent_dropout: float = 0.0,
                         seed: int = 42, sampled_words: int = 0,
                         name: str = "language_model") -> keras.Model:
    """The language model (see LanguageModel for the arguments); `name` names the model."""
    return LanguageModel(vocabulary, cell=cell, embedding_dim=embedding_dim, units=units,
                         layers=layers, dropout=dropout, embedding_dropout=embedding_dropout,
                         recurrent_dropout=recurrent_dropout, seed=seed,
                         sampled_words=sampled_words, name=name)


def vocabulary(model: keras.Model) -> list[str]:
    """A language model's vocabulary, in id order.

    Args:
        model: a model from build_language_model.
    """
    return model.get_layer(EMBEDDING).vocabulary


def recurrent(model: keras.Model) -> list:
    """A language model's recurrent layers, bottom first.

    Args:
        model: a model from build_language_model.
    """
    return [layer for layer in model.layers if layer.name.startswith("rnn_")]


def zero_states(model: keras.Model, batch_size: Any) -> list:
    """Zero states of every recurrent layer: one list of state tensors per layer.

    Args:
        model: a language model.
        batch_size: number of rows (int or scalar tensor).
    """
    return [layer.get_initial_state(batch_size) for layer in recurrent(model)]


def hidden_states(model: keras.Model, ids: Any, states: list,
                  mask: Any = None) -> tuple[Any, list]:
    """The top layer's outputs [batch, time, dim] and the final states (inference).

    Scoring them over the vocabulary is the costly part; callers that need only some steps'
    scores (the last word's, or none) score just those.

    Args:
        model: a language model.
        ids: int token ids [batch, time].
        states: per layer, its list of state tensors (zero_states, or a previous call's).
        mask: bool [batch, time]; masked steps carry states and outputs forward (right
            padding), so the last step's output is the one after each row's last word.
    """
    x = model.get_layer(EMBEDDING)(ids)
    final = []
    for layer, state in zip(recurrent(model), states, strict=True):
        out = layer(x, initial_state=state, mask=mask, training=False)
        x, new = out[0], list(out[1:])
        final.append(new)
    return x, final


def run(model: keras.Model, ids: Any, states: list, mask: Any = None) -> tuple[Any, list]:
    """Logits of every step and the final states, starting from `states` (inference).

    Args: as hidden_states'.
    """
    x, final = hidden_states(model, ids, states, mask)
    return model.get_layer(EMBEDDING)(x, scores=True), final


def generate(model: keras.Model, ids: tf.Tensor, mask: tf.Tensor, temperature: tf.Tensor,
             top_k: tf.Tensor, seed: tf.Tensor, words: tf.Tensor, stop_id: int,
             banned_id: int) -> tf.Tensor:
    """Continue each prompt word by word inside the graph (models.decoding.sample).

    Returns ids [batch, steps]; a row's continuation ends at `stop_id` (the end-of-document
    token, also written after the end) or after `words` words.

    Args:
        model: a language model.
        ids: the prompts' ids [batch, time], right-padded; every row has at least one word.
        mask: bool [batch, time], True on words.
        temperature: float [batch], > 0.
        top_k: int32 [batch], >= 1 (1 is greedy).
        seed: int64 [batch].
        words: int32 [batch], words to generate per row.
        stop_id: the id that ends a continuation.
        banned_id: an id never generated (the unknown word).
    """
    batch = tf.shape(ids)[0]
    lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    # The words before each prompt's last one set the states; the last word is the first
    # input of the search, whose first step thus scores the word after the prompt.
    before = tf.range(tf.shape(ids)[1])[None, :] < (lengths - 1)[:, None]
    _, states = hidden_states(model, ids, zero_states(model, batch), mask & before)
    last = tf.gather(ids, tf.maximum(lengths - 1, 0), batch_dims=1)

    def step(tokens: tf.Tensor, flat: list) -> tuple[tf.Tensor, list]:
        logits, new = run(model, tokens[:, None], tf.nest.pack_sequence_as(states, flat))
        return logits[:, -1], tf.nest.flatten(new)

    steps = tf.reduce_max(tf.concat([words, [0]], axis=0))
    return decoding.sample(step, tf.nest.flatten(states), last, stop_id, steps, temperature,
                           top_k, seed, banned_ids=(banned_id,), fill_id=stop_id,
                           row_limits=words)
