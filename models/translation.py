"""An attentional encoder-decoder translator built from rnnkit's recurrent layers.

The encoder is an embedding and a bidirectional recurrent layer; the decoder is a recurrent layer
started from the encoder's final states, attending over the encoder outputs after each step
(Luong et al., 2015) with an additive (Bahdanau et al., 2015) or multiplicative score. Training
uses teacher forcing; inference runs greedy or beam search in a tf.while_loop. The model holds its
vocabularies, so it maps raw strings to strings on its own and survives `model.save`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from models import decoding
from models.layers import Bidirectional, recurrent_layer
from models.text_bounds import cut_characters
from models.translation_text import END, PAD_ID, START, detokenize, standardize

ATTENTION_SCORES = ("additive", "multiplicative")
_NEG = -1e9  # the score of a padded source position: finite, so softmax stays finite


def _recurrent_layer(cell: str, units: int, name: str) -> keras.layers.Layer:
    """Our recurrent layer of the cell type, returning sequences and states."""
    return recurrent_layer(cell, units, return_sequences=True, return_state=True, name=name)


@keras.saving.register_keras_serializable(package="rnnkit")
class CrossAttention(keras.layers.Layer):
    """Attention of decoder outputs (queries) over encoder outputs (values), padding masked out.

    additive: score(q, k) = v · tanh(W_q q + W_k k); multiplicative: (W_q q) · (W_k k) / √units.

    Args:
        units: size of the projected queries and keys.
        score: `additive` or `multiplicative`.
        **kwargs: Keras layer arguments.
    """

    def __init__(self, units: int, score: str = "additive", **kwargs):
        if score not in ATTENTION_SCORES:
            raise ValueError(f"score={score!r} is not one of {ATTENTION_SCORES}.")
        super().__init__(**kwargs)
        self.supports_masking = True  # the queries' padding mask passes through unchanged
        self.units = units
        self.score = score
        self.query_dense = keras.layers.Dense(units, use_bias=False, name="query")
        self.key_dense = keras.layers.Dense(units, use_bias=False, name="key")
        self.score_dense = (keras.layers.Dense(1, use_bias=False, name="score")
                            if score == "additive" else None)

    def build(self, query_shape, values_shape=None, values_mask_shape=None, keys_shape=None):
        self.query_dense.build(query_shape)
        self.key_dense.build(values_shape)
        if self.score_dense is not None:
            self.score_dense.build((None, None, None, self.units))

    def keys(self, values: tf.Tensor) -> tf.Tensor:
        """Project the encoder outputs once per sentence; pass the result to every step.

        Args:
            values: encoder outputs [batch, source_len, dim].
        """
        return self.key_dense(values)

    def call(self, query, values, values_mask, keys=None):
        """Returns (context [batch, target_len, dim], weights [batch, target_len, source_len]).

        Args:
            query: decoder outputs [batch, target_len, query_dim].
            values: encoder outputs [batch, source_len, dim].
            values_mask: [batch, source_len] bool, True at real source tokens.
            keys: `keys(values)` if already computed.
        """
        keys = self.keys(values) if keys is None else keys
        queries = self.query_dense(query)
        if self.score_dense is not None:
            scores = tf.squeeze(self.score_dense(
                tf.tanh(queries[:, :, None, :] + keys[:, None, :, :])), -1)
        else:
            scores = tf.matmul(queries, keys, transpose_b=True) / math.sqrt(self.units)
        scores = tf.where(values_mask[:, None, :], scores, _NEG)
        weights = tf.nn.softmax(scores, axis=-1)
        return tf.matmul(weights, values), weights

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "score": self.score}


@keras.saving.register_keras_serializable(package="rnnkit")
class Translator(keras.Model):
    """Encoder-decoder with attention; `call((source_ids, target_in_ids))` gives logits.

    Args:
        source_vocabulary: source tokens by id (`''` and `[UNK]` first, as TextVectorization's
            `get_vocabulary()` returns them).
        target_vocabulary: target tokens by id, holding `[START]` and `[END]`.
        embedding_dim: size of both token embeddings.
        units: size of each direction of the encoder; the decoder has 2 * units.
        cell: recurrent cell of encoder and decoder: `lstm`, `gru` or `rnn`.
        attention: attention score, `additive` or `multiplicative`.
        dropout: dropout on embeddings and on the decoder's attentional output.
        **kwargs: Keras model arguments (name).
    """

    def __init__(self, source_vocabulary: list[str], target_vocabulary: list[str],
                 embedding_dim: int = 128, units: int = 128, cell: str = "gru",
                 attention: str = "additive", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        missing = [t for t in (START, END) if t not in target_vocabulary]
        if missing:
            raise ValueError(f"target_vocabulary lacks {missing}; adapt it on sentences wrapped "
                             "in the start and end tokens.")
        self.source_vocabulary = list(source_vocabulary)
        self.target_vocabulary = list(target_vocabulary)
        self.embedding_dim, self.units, self.cell_kind = embedding_dim, units, cell
        self.attention_score, self.dropout_rate = attention, dropout
        self.start_id = self.target_vocabulary.index(START)
        self.end_id = self.target_vocabulary.index(END)

        self.source_vectorizer = _vectorizer(self.source_vocabulary, "source_vectorizer")
        self.target_vectorizer = _vectorizer(self.target_vocabulary, "target_vectorizer")
        self.source_embedding = keras.layers.Embedding(
            len(self.source_vocabulary), embedding_dim, mask_zero=True, name="source_embedding")
        self.encoder_rnn = Bidirectional(_recurrent_layer(cell, units, "encoder"),
                                         name="bidirectional_encoder")
        self.target_embedding = keras.layers.Embedding(
            len(self.target_vocabulary), embedding_dim, mask_zero=True, name="target_embedding")
        self.decoder_rnn = _recurrent_layer(cell, 2 * units, "decoder")
        self.attention = CrossAttention(2 * units, attention, name="attention")
        self.combine = keras.layers.Dense(2 * units, activation="tanh", name="attentional")
        self.output_dense = keras.layers.Dense(len(self.target_vocabulary), name="logits")
        self.dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape=None):
        # Run once on a dummy pair so every weight exists (load_model needs them before loading).
        ids = tf.ones([1, 1], tf.int64)
        self.call((ids, ids))
        self.built = True

    # ---- encoder and decoder ----

    def encode(self, source_ids: tf.Tensor, training: bool = False):
        """Returns (outputs [batch, source_len, 2 units], mask [batch, source_len], states).

        Args:
            source_ids: [batch, source_len] token ids, 0 for padding.
            training: whether dropout is active.
        """
        mask = tf.not_equal(source_ids, PAD_ID)
        embedded = self.dropout(self.source_embedding(source_ids), training=training)
        outputs, *states = self.encoder_rnn(embedded, mask=mask, training=training)
        half = len(states) // 2
        merged = [tf.concat([f, b], axis=-1) for f, b in zip(states[:half], states[half:],
                                                               strict=True)]
        return outputs, mask, merged

    def _attentional(self, rnn_outputs, encoder_outputs, source_mask, keys=None,
                     training: bool = False):
        context, weights = self.attention(rnn_outputs, encoder_outputs, source_mask, keys=keys)
        hidden = self.combine(tf.concat([rnn_outputs, context], axis=-1))
        return self.output_dense(self.dropout(hidden, training=training)), weights

    def decode(self, target_in_ids, encoder_outputs, source_mask, states,
               training: bool = False):
        """Teacher-forced decoder: (logits [batch, target_len, vocab], attention weights).

        Args:
            target_in_ids: [batch, target_len] ids starting with [START], 0 for padding.
            encoder_outputs: from `encode`.
            source_mask: from `encode`.
            states: the decoder's initial states, from `encode`.
            training: whether dropout is active.
        """
        embedded = self.dropout(self.target_embedding(target_in_ids), training=training)
        mask = tf.not_equal(target_in_ids, PAD_ID)
        outputs, *_ = self.decoder_rnn(embedded, initial_state=states, mask=mask,
                                       training=training)
        return self._attentional(outputs, encoder_outputs, source_mask, training=training)

    def decode_step(self, token_ids, states, encoder_outputs, keys, source_mask):
        """One inference step: (log-probabilities [batch, vocab], new states).

        Args:
            token_ids: [batch] the previous output token.
            states: list of decoder states.
            encoder_outputs: from `encode`.
            keys: `self.attention.keys(encoder_outputs)`.
            source_mask: from `encode`.
        """
        # Embedding.call, not __call__: a single step needs no padding mask, and a mask attached
        # to the input would make the cell warn that it cannot use it.
        embedded = self.target_embedding.call(token_ids)
        output, new_states = self.decoder_rnn.cell(embedded, states)
        logits, _ = self._attentional(output[:, None, :], encoder_outputs, source_mask, keys)
        return tf.nn.log_softmax(logits[:, 0, :]), list(new_states)

    def call(self, inputs, training: bool = False):
        source_ids, target_in_ids = inputs
        encoder_outputs, source_mask, states = self.encode(source_ids, training)
        logits, _ = self.decode(target_in_ids, encoder_outputs, source_mask, states, training)
        return logits

    # ---- search ----

    def _max_steps(self, source_ids, max_length: int) -> tf.Tensor:
        """Output length cap: max_length, and never more than twice the source plus ten."""
        lengths = tf.reduce_sum(tf.cast(source_ids != PAD_ID, tf.int32), 1)
        source_len = tf.reduce_max(tf.concat([lengths, [0]], 0))  # 0 for an empty batch
        return tf.minimum(max_length, 2 * source_len + 10)

    def greedy_search(self, source_ids: tf.Tensor, max_length: int = 50) -> tf.Tensor:
        """The most likely token at each step: ids [batch, steps], [END] then 0s once finished.

        Args:
            source_ids: [batch, source_len] token ids.
            max_length: most output tokens, [END] included.
        """
        return self.beam_search(source_ids, beam_width=1, max_length=max_length)

    def beam_search(self, source_ids: tf.Tensor, beam_width: int = 4, max_length: int = 50,
                    length_penalty: float = 1.0) -> tf.Tensor:
        """Beam search: the best of `beam_width` hypotheses by log-probability / length^penalty.

        Returns ids [batch, steps] holding each sentence's [END] followed by 0s. beam_width 1 is
        greedy search.

        Args:
            source_ids: [batch, source_len] token ids.
            beam_width: hypotheses kept per sentence.
            max_length: most output tokens, [END] included.
            length_penalty: exponent of the length normalisation (0 favours short outputs).
        """
        encoder_outputs, source_mask, states = self.encode(source_ids)
        keys = self.attention.keys(encoder_outputs)
        # The search runs beam_width rows a sentence, next to each other. What the encoder
        # made is the same for a sentence's beams, so it is repeated once here, not carried
        # (and reordered every step) in the search's states.
        encoder_outputs, keys, source_mask = (tf.repeat(x, beam_width, axis=0)
                                              for x in (encoder_outputs, keys, source_mask))

        def step(tokens, states):
            return self.decode_step(tf.cast(tokens, tf.int64), states, encoder_outputs, keys,
                                    source_mask)

        start = tf.fill([tf.shape(source_ids)[0]], self.start_id)
        ids = decoding.beam_search(
            step, states, start, self.end_id, self._max_steps(source_ids, max_length),
            beam_width, length_penalty, banned_ids=(PAD_ID, self.start_id), fill_id=PAD_ID)
        return tf.cast(ids, tf.int64)

    # ---- text in, text out ----

    def source_ids(self, text: tf.Tensor, max_tokens: int | None = None) -> tf.Tensor:
        """Standardise and vectorize raw source sentences: ids [batch, source_len], 0-padded.

        Args:
            text: tf.string [batch].
            max_tokens: read at most this many tokens of each sentence; None for all.
        """
        if max_tokens is not None:
            text = cut_characters(text, max_tokens)
        ids = self.source_vectorizer(standardize(text))
        if max_tokens is not None:
            ids = ids[:, :max_tokens]
        ids = ids.to_tensor(PAD_ID)
        # At least one (padding) step: a batch of empty sentences must not give the encoder a
        # sequence of length 0.
        return tf.pad(ids, [[0, 0], [0, tf.maximum(1 - tf.shape(ids)[1], 0)]])

    def output_tokens(self, ids: tf.Tensor) -> tf.Tensor:
        """Target tokens of output ids, with [START], [END] and padding as empty strings.

        Args:
            ids: [batch, steps] ids from a search.
        """
        tokens = tf.gather(tf.constant(self.target_vocabulary), ids)
        special = (ids == PAD_ID) | (ids == self.start_id) | (ids == self.end_id)
        return tf.where(special, "", tokens)

    def translate(self, text: tf.Tensor, beam_width: int = 4, max_length: int = 50,
                  length_penalty: float = 1.0, max_input_tokens: int | None = None) -> tf.Tensor:
        """Translate raw source sentences to target sentences (tf.string [batch]).

        Args:
            text: tf.string [batch] raw sentences.
            beam_width: 1 for greedy search, more for beam search.
            max_length: most output tokens.
            length_penalty: see `beam_search`.
            max_input_tokens: read at most this many tokens of each sentence; None for all.
        """
        text = tf.convert_to_tensor(text, tf.string)
        ids = self.beam_search(self.source_ids(text, max_input_tokens), beam_width, max_length,
                               length_penalty)
        return detokenize(self.output_tokens(ids))

    def translate_with_attention(self, text: tf.Tensor, beam_width: int = 4,
                                 max_length: int = 50, length_penalty: float = 1.0,
                                 max_input_tokens: int | None = None) -> dict:
        """Translate one sentence and return the attention behind each output token.

        Returns a dict, each value with a leading axis of 1 (one sentence): translation [1],
        source_tokens [1, source_len], output_tokens [1, out_len] (ending in [END] unless
        max_length cut it) and attention [1, out_len, source_len], row i being where the
        decoder looked while choosing output token i.

        Args:
            text: tf.string [1] (or scalar): one raw sentence.
            beam_width: 1 for greedy search, more for beam search.
            max_length: most output tokens.
            length_penalty: see `beam_search`.
            max_input_tokens: read at most this many tokens of the sentence; None for all.
        """
        text = tf.reshape(tf.convert_to_tensor(text, tf.string), [-1])
        # Assert with the reason alone: assert_equal appends TensorFlow's condition and values.
        check = tf.debugging.Assert(
            tf.equal(tf.size(text), 1),
            ["translate_with_attention takes exactly one sentence"])
        with tf.control_dependencies([check]):
            # [:1] keeps the batch size dynamic, like the encoder states the decoder starts from.
            text = text[:1]
        if max_input_tokens is not None:
            text = cut_characters(text, max_input_tokens)
        source_ids = self.source_ids(text, max_input_tokens)
        ids = self.beam_search(source_ids, beam_width, max_length, length_penalty)
        ids = ids[:, :tf.reduce_sum(tf.cast(ids != PAD_ID, tf.int32))]  # [END] included
        # Teacher-forcing the chosen output repeats the search's steps and yields their weights.
        start = tf.fill([tf.shape(ids)[0], 1], tf.constant(self.start_id, tf.int64))
        encoder_outputs, source_mask, states = self.encode(source_ids)
        _, weights = self.decode(tf.concat([start, ids[:, :-1]], axis=1), encoder_outputs,
                                 source_mask, states)
        source_tokens = tf.strings.split(standardize(text))
        if max_input_tokens is not None:
            source_tokens = source_tokens[:, :max_input_tokens]
        source_tokens = source_tokens.to_tensor()
        return {
            "translation": detokenize(self.output_tokens(ids)),
            "source_tokens": source_tokens,
            "output_tokens": tf.gather(tf.constant(self.target_vocabulary), ids),
            # Without the padding step an empty sentence gets (see source_ids).
            "attention": weights[:, :, :tf.shape(source_tokens)[1]],
        }

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "source_vocabulary": self.source_vocabulary,
            "target_vocabulary": self.target_vocabulary,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "cell": self.cell_kind,
            "attention": self.attention_score,
            "dropout": self.dropout_rate,
        }


def _vectorizer(vocabulary: list[str], name: str) -> keras.layers.TextVectorization:
    """A TextVectorization over already standardised text with a fixed vocabulary."""
    return keras.layers.TextVectorization(standardize=None, split="whitespace", ragged=True,
                                          vocabulary=vocabulary, name=name)


@keras.saving.register_keras_serializable(package="rnnkit")
class MaskedTokenAccuracy(keras.metrics.Metric):
    """Share of real (non-padding) target tokens whose arg-max prediction is right.

    Args:
        name: metric name.
        **kwargs: Keras metric arguments.
    """

    def __init__(self, name: str = "masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int64)
        real = tf.cast(y_true != PAD_ID, tf.float32)
        hits = tf.cast(tf.argmax(y_pred, axis=-1) == y_true, tf.float32) * real
        self.correct.assign_add(tf.reduce_sum(hits))
        self.total.assign_add(tf.reduce_sum(real))

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)
