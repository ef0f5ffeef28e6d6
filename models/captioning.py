"""Image captioning: a convolutional image encoder whose features start a recurrent word decoder.

Training uses teacher forcing on every caption of an image at once (the image is encoded once
and shared by its captions). Inference (greedy or beam search) runs inside the graph with
`tf.while_loop`, so the exported SavedModel maps image bytes to caption strings on its own.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings

import keras
import tensorflow as tf

from models import decoding
from models.layers import CELLS, recurrent_layer, state_names

PAD, OOV, START, END = "", "[UNK]", "<start>", "<end>"

# name -> (keras.applications constructor, whether it expects pixels scaled to [-1, 1]).
ENCODERS = {
    "mobilenet_v2": (keras.applications.MobileNetV2, True),
    "mobilenet_v3_small": (keras.applications.MobileNetV3Small, False),
    "mobilenet_v3_large": (keras.applications.MobileNetV3Large, False),
    "efficientnet_b0": (keras.applications.EfficientNetB0, False),
}


def normalize_caption(text: tf.Tensor) -> tf.Tensor:
    """Lower-case a caption and keep only letters, digits and single spaces.

    Args:
        text: string tensor of any shape.
    """
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"[^a-z0-9' ]", " ")
    text = tf.strings.regex_replace(text, r"'", "")
    text = tf.strings.regex_replace(text, r" +", " ")
    return tf.strings.strip(text)


# Images with more pixels than this are refused before decoding (a decompression bomb: a 774 KB
# PNG can hold 16,000 x 16,000 pixels, 768 MB decoded).
MAX_IMAGE_PIXELS = 40_000_000


def image_size_from_header(image_bytes: tf.Tensor) -> tf.Tensor:
    """[height, width] of a JPEG, PNG, GIF or BMP image read from its header, without decoding.

    [0, 0] for bytes of another format or too short to hold a header (decoding then says what
    is wrong with them).

    Args:
        image_bytes: scalar string tensor with the encoded image.
    """
    def field(offset: int, dtype: tf.DType, little_endian: bool) -> tf.Tensor:
        size = 4 if dtype == tf.uint16 else 8
        raw = tf.io.decode_raw(tf.strings.substr(image_bytes, offset, size), dtype,
                               little_endian=little_endian)
        return tf.abs(tf.cast(raw, tf.int64))  # [width, height]; a BMP's height may be < 0

    head = tf.strings.substr(image_bytes, 0, 4)
    long_enough = tf.strings.length(image_bytes) >= 26
    unknown = tf.zeros([2], tf.int64)
    width_height = tf.case([
        (tf.equal(tf.strings.substr(head, 0, 2), b"\xff\xd8"),
         lambda: tf.cast(tf.image.extract_jpeg_shape(image_bytes)[1::-1], tf.int64)),
        (long_enough & tf.equal(head, b"\x89PNG"), lambda: field(16, tf.int32, False)),
        (long_enough & tf.equal(tf.strings.substr(head, 0, 3), b"GIF"),
         lambda: field(6, tf.uint16, True)),
        (long_enough & tf.equal(tf.strings.substr(head, 0, 2), b"BM"),
         lambda: field(18, tf.int32, True)),
    ], default=lambda: unknown, exclusive=False)
    return width_height[::-1]


def decode_and_resize(image_bytes: tf.Tensor, image_size: int,
                      max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Tensor:
    """Decode one JPEG/PNG/BMP/GIF image to RGB and resize it to [size, size, 3] uint8.

    Training and serving both use this, so the model sees identically prepared pixels. An image
    whose header says it has more than `max_pixels` pixels is refused before it is decoded
    (INVALID_ARGUMENT naming its size and the limit).

    Args:
        image_bytes: scalar string tensor with the encoded image.
        image_size: output height and width.
        max_pixels: the most pixels an image may have.
    """
    height_width = image_size_from_header(image_bytes)
    check = tf.debugging.Assert(
        tf.reduce_prod(height_width) <= max_pixels,
        ["the image is", height_width[1], "x", height_width[0],
         f"pixels, more than the limit of {max_pixels:,} pixels; send a smaller image"])
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def decode_images(image_bytes: tf.Tensor, image_size: int,
                  max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Tensor:
    """Encoded images [batch] -> uint8 pixels [batch, size, size, 3], inside the graph.

    Args:
        image_bytes: string tensor [batch] of JPEG/PNG/BMP/GIF files.
        image_size: output height and width.
        max_pixels: the most pixels an image may have (checked before decoding).
    """
    return tf.map_fn(lambda b: decode_and_resize(b, image_size, max_pixels), image_bytes,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8))


def build_encoder(name: str, image_size: int, alpha: float, weights: str,
                  bn_momentum: float = 0.9, seed: int | None = None) -> keras.Model:
    """A keras.applications backbone without its classifier: image -> spatial feature map.

    Args:
        name: one of ENCODERS.
        image_size: input height and width in pixels.
        alpha: width multiplier of the MobileNets (ignored by EfficientNet).
        weights: "imagenet" (downloads Keras's weights), "none" (random, trained from scratch)
            or the path of a weights file for this exact backbone.
        bn_momentum: momentum of the BatchNormalization moving statistics. keras.applications
            use 0.999, tuned for long ImageNet training; a few hundred steps from scratch with
            it would leave the inference statistics far from the training ones.
        seed: with weights "none", seeds the random initial weights, so the same seed gives
            the same encoder (a frozen random encoder's cached features stay valid).
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    constructor, _ = ENCODERS[name]
    kwargs = {"input_shape": (image_size, image_size, 3), "include_top": False}
    if name.startswith("mobilenet"):
        kwargs["alpha"] = alpha
    if name.startswith("mobilenet_v3"):
        kwargs["include_preprocessing"] = True
    if weights == "none":
        if seed is not None:
            # keras.applications take no seed; their unseeded initializers draw from this.
            keras.utils.set_random_seed(seed)
        return _with_bn_momentum(constructor(weights=None, **kwargs), bn_momentum)
    if weights != "imagenet" and not tf.io.gfile.exists(weights):
        raise ValueError(f"encoder weights file {weights!r} does not exist; pass imagenet, none "
                         "or the path of a weights file saved from this backbone")
    try:
        # Keras prints download progress to stdout, which rnnkit keeps for JSON results.
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            # Files saved by Keras 3 (the mirror's) name the functional graph's weightless
            # internal containers, which Keras warns about once per block.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            return _with_bn_momentum(constructor(weights=weights, **kwargs), bn_momentum)
    except Exception as err:  # Keras raises plain Exception when the download fails
        if weights == "imagenet":
            raise ValueError(
                f"could not get the ImageNet weights of {name} ({err}); without internet pass "
                "encoder_weights=none (train the encoder from scratch) or the path of a "
                "weights file") from err
        fits = identify_weights(weights)
        found = (f"the file holds weights of {fits}" if fits else
                 "the file fits none of " + ", ".join(sorted(ENCODERS)) + " at any alpha")
        raise ValueError(f"encoder weights {weights!r} do not fit {name} alpha={alpha}: "
                         f"{found}; set encoder/encoder_alpha to match the file, or pass "
                         "another file") from err


# Width multipliers keras.applications builds for each MobileNet.
ALPHAS = {"mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
          "mobilenet_v3_small": (0.75, 1.0), "mobilenet_v3_large": (0.75, 1.0)}


def identify_weights(path: str) -> str | None:
    """Which encoder and alpha a no-top weights file was saved from ("mobilenet_v2 alpha=0.35").

    Tries each backbone of ENCODERS at each alpha (small inputs, no weights) and returns the
    first that loads the file; None when none does. Only used to explain a failed load.

    Args:
        path: a `.weights.h5` file.
    """
    for name, (constructor, _) in ENCODERS.items():
        for alpha in ALPHAS.get(name, (1.0,)):
            kwargs = {"alpha": alpha} if name.startswith("mobilenet") else {}
            try:
                candidate = constructor(weights=None, include_top=False,
                                        input_shape=(32, 32, 3), **kwargs)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Skipping nested container")
                    candidate.load_weights(path)
            except Exception:  # any mismatch: try the next candidate
                continue
            return f"{name} alpha={alpha}" if name.startswith("mobilenet") else name
    return None


def set_trainable_blocks(encoder: keras.Model, blocks: int) -> None:
    """Freeze the encoder but its last `blocks` blocks (-1: everything trains, 0: frozen).

    A MobileNetV2 block is the layers named `block_<n>_...`; the final 1x1 convolution after
    block 16 counts with the last block. Other backbones take only -1 or 0.

    Args:
        encoder: a build_encoder model.
        blocks: how many of the last blocks train.
    """
    encoder.trainable = blocks != 0
    if blocks <= 0:
        return
    numbers = sorted({int(m.group(1)) for layer in encoder.layers
                      if (m := re.match(r"block_(\d+)_", layer.name))})
    if not numbers:
        raise ValueError(f"encoder {encoder.name} has no numbered blocks to fine-tune; "
                         "use trainable_encoder_blocks=0 (frozen) or -1 (all)")
    first = numbers[-min(blocks, len(numbers))]
    trainable = False
    for layer in encoder.layers:
        m = re.match(r"block_(\d+)_", layer.name)
        if m and int(m.group(1)) >= first:
            trainable = True
        # BatchNormalization keeps its ImageNet statistics (the encoder runs in inference mode).
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)


def encoder_features(encoder: keras.Model, name: str, pixels, training: bool = False):
    """Pixels 0..255 [batch, size, size, 3] -> the encoder's feature maps [batch, h, w, c].

    Scales the pixels as the backbone expects; the model, the feature cache and the export all
    go through here, so cached and served features agree.

    Args:
        encoder: a build_encoder model.
        name: its ENCODERS name.
        pixels: images (any numeric dtype).
        training: BatchNormalization uses batch statistics when True.
    """
    x = tf.cast(pixels, encoder.compute_dtype)
    if ENCODERS[name][1]:
        x = x / 127.5 - 1.0
    if training:
        return encoder(x, training=True)
    # TensorFlow's oneDNN Conv2D (2.21, on CPUs with AVX-512) answers an empty batch with its
    # input unchanged, and the next layer fails on the shape: an empty request is run as one
    # blank image and cut back to none.
    count = tf.shape(x)[0]
    x = tf.cond(count > 0, lambda: x,
                lambda: tf.zeros(tf.concat([[1], tf.shape(x)[1:]], 0), x.dtype))
    return encoder(x, training=False)[:count]


def _with_bn_momentum(model: keras.Model, momentum: float) -> keras.Model:
    """Set the momentum of every BatchNormalization layer of `model`; returns the model."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


@keras.saving.register_keras_serializable(package="rnnkit")
class Captioner(keras.Model):
    """Image encoder -> recurrent decoder with optional attention over the spatial features.

    Training input: {"image": [batch, size, size, 3] pixels 0..255, or "features": the
    encoder's feature maps [batch, h, w, channels] (from `image_features`, e.g. a feature cache
    of a frozen encoder), and "caption_in": [batch, captions, time] token ids starting with
    <start>; a caption of all padding is ignored}; output: next-token logits [batch, captions,
    time, vocab]. `generate` and `caption` decode new captions; `attention_maps` says where
    each word looked.

    Args:
        vocabulary: tokens by id; id 0 is padding, then [UNK], <start>, <end>, words.
        image_size: encoder input height and width.
        encoder: keras.applications backbone, one of ENCODERS.
        encoder_alpha: MobileNet width multiplier.
        encoder_weights: "imagenet", "none" or a weights file path (used at construction only).
        encoder_bn_momentum: momentum of the encoder's BatchNormalization statistics.
        trainable_encoder_blocks: -1 trains the whole encoder with the decoder (from scratch),
            0 freezes it (ImageNet features), N > 0 fine-tunes its last N blocks only.
        embed_dim: word embedding size.
        units: decoder state size.
        cell: the decoder's cell type, a key of models.layers.CELLS.
        attention: whether each step attends over the encoder's spatial feature map.
        dropout: dropout on embeddings and decoder outputs.
        augment: random flip / zoom / contrast on training images.
        max_length: most words generated at inference (the end token excluded).
        beam_width: 1 for greedy decoding, more for beam search.
        length_penalty: beam hypotheses are ranked by log-prob / length**length_penalty.
        attention_regularization: weight of Show, Attend and Tell's doubly stochastic penalty
            mean_p (1 - sum_t alpha_tp)^2, which asks every image position to be looked at
            over the caption (0 turns it off).
        normalize_features: standardize each position's feature vector (no weights) before
            the decoder sees it. A frozen ImageNet encoder's ReLU6 maps (1,280 channels up to
            6) otherwise saturate the attention's tanh and stall learning.
        residual_attention: add the attention's output to the decoder's instead of replacing
            it. Early in training the context (nearly the same at every step) otherwise
            drowns the decoder's word-by-word signal; with the residual a small model learns
            four images' captions in 40 steps instead of stalling.
        max_image_pixels: served images with more pixels (read from their header) are
            refused before decoding.
        seed: seed of augmentation, dropout and a random encoder's initial weights.
        **kwargs: keras.Model arguments (name).
    """

    def __init__(self, vocabulary: list[str], image_size: int = 128,
                 encoder: str = "mobilenet_v2", encoder_alpha: float = 0.35,
                 encoder_weights: str = "none", encoder_bn_momentum: float = 0.9,
                 trainable_encoder_blocks: int = -1, embed_dim: int = 128, units: int = 256,
                 cell: str = "lstm", attention: bool = True, dropout: float = 0.3,
                 augment: bool = True, max_length: int = 20, beam_width: int = 3,
                 length_penalty: float = 0.7, attention_regularization: float = 0.0,
                 normalize_features: bool = False, residual_attention: bool = False,
                 max_image_pixels: int = MAX_IMAGE_PIXELS, seed: int = 42, **kwargs):
        super().__init__(**kwargs)
        if list(vocabulary[:4]) != [PAD, OOV, START, END]:
            raise ValueError(f"vocabulary must start with {[PAD, OOV, START, END]}, "
                             f"got {list(vocabulary[:4])}")
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {sorted(CELLS)}")
        if beam_width < 1 or max_length < 1:
            raise ValueError(f"beam_width and max_length must be >= 1, got {beam_width}, "
                             f"{max_length}")
        self.vocabulary = list(vocabulary)
        self.image_size, self.encoder_name, self.encoder_alpha = image_size, encoder, encoder_alpha
        self.encoder_weights, self.encoder_bn_momentum = encoder_weights, encoder_bn_momentum
        self.embed_dim, self.units, self.cell_type = embed_dim, units, cell
        self.use_attention, self.dropout_rate, self.augment = attention, dropout, augment
        self.max_length, self.beam_width = max_length, beam_width
        self.length_penalty, self.seed = length_penalty, seed
        self.trainable_encoder_blocks = trainable_encoder_blocks
        self.attention_regularization = attention_regularization
        self.normalize_features, self.residual_attention = normalize_features, residual_attention
        self.max_image_pixels = max_image_pixels
        vocab_size = len(self.vocabulary)

        self.augmenter = keras.Sequential([
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomZoom((-0.2, 0.0), fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomContrast(0.2, seed=seed + 3),
        ], name="augment")
        self.encoder = build_encoder(encoder, image_size, encoder_alpha, encoder_weights,
                                     encoder_bn_momentum, seed=seed)
        set_trainable_blocks(self.encoder, trainable_encoder_blocks)
        # The spatial grid of the feature map: attention maps are drawn on it.
        self.grid = tuple(self.encoder.output_shape[1:3])
        self.feature_norm = (keras.layers.LayerNormalization(center=False, scale=False,
                                                             name="feature_norm")
                             if normalize_features else None)
        self.feature_dropout = keras.layers.Dropout(dropout, seed=seed + 4)
        self.pool = keras.layers.GlobalAveragePooling2D()
        # Layers are made in a fixed order: each draws its initializers' seeds when made.
        self.init_states = [keras.layers.Dense(units, activation="tanh", name=f"init_state_{i}")
                            for i in range(len(state_names(cell)))]
        self.keys = keras.layers.Dense(units, name="attention_keys") if attention else None
        self.combine = (keras.layers.Dense(units, activation="tanh", name="attention_combine")
                        if attention else None)
        self.embedding = keras.layers.Embedding(vocab_size, embed_dim, name="embedding")
        self.embed_dropout = keras.layers.Dropout(dropout, seed=seed + 5)
        self.decoder = recurrent_layer(cell, units, return_sequences=True, name="decoder")
        self.output_dropout = keras.layers.Dropout(dropout, seed=seed + 6)
        self.logits = keras.layers.Dense(vocab_size, name="logits")
        self.vocab_table = tf.constant(self.vocabulary)

    def build(self, input_shape=None):
        # One dummy call creates every weight (keras.saving.load_model needs them to load into).
        size = self.image_size
        self.call({"image": tf.zeros([1, size, size, 3], tf.uint8),
                   "caption_in": tf.zeros([1, 1, 2], tf.int32)})
        self.built = True

    # -- shared by training and inference ---------------------------------------------------

    def image_features(self, images, training: bool = False):
        """Pixels -> the encoder's feature map [batch, h, w, channels].

        This is what a feature cache of a frozen encoder stores, so cached and served features
        come from one function.

        Args:
            images: [batch, size, size, 3] pixels 0..255 (any numeric dtype).
            training: applies augmentation when True (and BatchNormalization's batch
                statistics only when the whole encoder trains).
        """
        x = tf.cast(images, self.compute_dtype)
        if self.augment and training:
            x = self.augmenter(x, training=True)
        # A frozen or partly fine-tuned encoder keeps its ImageNet BatchNorm statistics.
        return encoder_features(self.encoder, self.encoder_name, x,
                                training=training and self.trainable_encoder_blocks < 0)

    def encode(self, images, training: bool = False):
        """Images -> (initial decoder states, attention keys [batch, positions, units] or None).

        Args:
            images: [batch, size, size, 3] pixels 0..255 (any numeric dtype).
            training: applies augmentation and dropout when True.
        """
        return self.bridge(self.image_features(images, training=training), training=training)

    def bridge(self, fmap, training: bool = False):
        """Feature maps -> (initial decoder states, attention keys or None).

        Args:
            fmap: [batch, h, w, channels] from `image_features`.
            training: applies dropout when True.
        """
        fmap = tf.cast(fmap, self.compute_dtype)
        if self.feature_norm is not None:
            fmap = self.feature_norm(fmap)
        fmap = self.feature_dropout(fmap, training=training)
        pooled = self.pool(fmap)
        states = [dense(pooled) for dense in self.init_states]
        keys = None
        if self.use_attention:
            shape = tf.shape(fmap)
            keys = self.keys(tf.reshape(fmap, [shape[0], shape[1] * shape[2], fmap.shape[-1]]))
        return states, keys

    def readout(self, outputs, keys, training: bool = False):
        """Decoder outputs [batch, time, units] -> (next-token logits, attention or None).

        Args:
            outputs: decoder outputs.
            keys: attention keys from `encode`, or None without attention.
            training: applies dropout when True.

        Returns:
            logits [batch, time, vocab] and the attention weights [batch, time, positions].
        """
        weights = None
        if keys is not None:
            scores = tf.einsum("btu,bpu->btp", outputs, keys) / tf.sqrt(float(self.units))
            weights = tf.nn.softmax(scores, axis=-1)
            context = tf.einsum("btp,bpu->btu", weights, keys)
            attended = self.combine(tf.concat([outputs, context], axis=-1))
            outputs = outputs + attended if self.residual_attention else attended
        return self.logits(self.output_dropout(outputs, training=training)), weights

    def call(self, inputs, training: bool = False):
        if "features" in inputs:
            states, keys = self.bridge(inputs["features"], training=training)
        else:
            states, keys = self.encode(inputs["image"], training=training)
        tokens = inputs["caption_in"]
        shape = tf.shape(tokens)
        per_image = shape[1]
        # Every caption of an image starts from that image's features.
        states = [tf.repeat(s, per_image, axis=0) for s in states]
        if keys is not None:
            keys = tf.repeat(keys, per_image, axis=0)
        flat = tf.reshape(tokens, [shape[0] * per_image, shape[2]])
        x = self.embed_dropout(self.embedding(flat), training=training)
        outputs = self.decoder(x, initial_state=states, training=training)
        logits, weights = self.readout(outputs, keys, training=training)
        if training and weights is not None and self.attention_regularization > 0:
            self.add_loss(self.attention_regularization * doubly_stochastic_penalty(
                weights, tf.not_equal(flat, 0)))
        return tf.reshape(logits, [shape[0], per_image, shape[2], len(self.vocabulary)])

    # -- inference --------------------------------------------------------------------------

    def _step(self, tokens, states):
        """One decoding step: token ids [batch] and (decoder states, keys) -> logits, states."""
        cell_states, keys = states
        x = self.embedding(tokens)
        output, cell_states = self.decoder.cell(x, list(cell_states), training=False)
        logits, _ = self.readout(output[:, None, :], keys if self.use_attention else None)
        logits = logits[:, 0, :]
        return logits, (list(cell_states), keys)

    def generate(self, images, beam_width: int | None = None, max_length: int | None = None):
        """Token ids [batch, max_length] of the best caption per image (0 after <end>).

        Args:
            images: [batch, size, size, 3] pixels 0..255.
            beam_width: overrides the model's beam width (1 = greedy).
            max_length: overrides the model's maximum caption length.
        """
        beam_width = beam_width or self.beam_width
        max_length = max_length or self.max_length
        states, keys = self.encode(images, training=False)
        if keys is None:  # a placeholder keeps the loop state's structure fixed
            keys = tf.zeros([tf.shape(images)[0], 1, 1], self.compute_dtype)
        start = tf.fill([tf.shape(images)[0]], self.vocabulary.index(START))
        end = self.vocabulary.index(END)
        # Padding, [UNK] and <start> are never worth emitting in a caption.
        banned = [self.vocabulary.index(t) for t in (PAD, OOV, START)]
        if beam_width == 1:
            ids = decoding.greedy_search(self._step, (states, keys), start, end, max_length,
                                         banned)
        else:
            ids = decoding.beam_search(self._step, (states, keys), start, end, max_length,
                                       beam_width, self.length_penalty, banned)
        # The search stops once every caption ended; keep the documented [batch, max_length].
        return tf.pad(ids, [[0, 0], [0, max_length - tf.shape(ids)[1]]])

    def ids_to_text(self, ids) -> tf.Tensor:
        """Token ids [batch, time] -> caption strings [batch], stopping at <end>.

        Args:
            ids: generated token ids.
        """
        end = self.vocabulary.index(END)
        before_end = tf.equal(tf.cumsum(tf.cast(tf.equal(ids, end), tf.int32), axis=1), 0)
        keep = before_end & (ids > self.vocabulary.index(START))
        words = tf.ragged.boolean_mask(tf.gather(self.vocab_table, ids), keep)
        return tf.strings.reduce_join(words, axis=1, separator=" ")

    def caption(self, images, beam_width: int | None = None) -> tf.Tensor:
        """Caption strings [batch] for pixel images [batch, size, size, 3].

        Args:
            images: pixels 0..255.
            beam_width: overrides the model's beam width (1 = greedy).
        """
        return self.ids_to_text(self.generate(images, beam_width=beam_width))

    def attention_maps(self, images, ids) -> tf.Tensor:
        """Where the decoder looked for each word of given captions: [batch, time, h, w].

        Attention at a step depends only on the words before it, so running the decoder over
        the generated words (teacher forcing) gives exactly the weights decoding used.

        Args:
            images: [batch, size, size, 3] pixels 0..255.
            ids: [batch, time] word ids of one caption per image (from `generate`).
        """
        if not self.use_attention:
            raise ValueError("this captioner was trained without attention (attention=false)")
        states, keys = self.encode(images)
        start = tf.fill([tf.shape(ids)[0], 1], self.vocabulary.index(START))
        inputs = tf.concat([start, tf.cast(ids[:, :-1], tf.int32)], axis=1)
        outputs = self.decoder(self.embedding(inputs), initial_state=states)
        _, weights = self.readout(outputs, keys)
        shape = tf.shape(weights)
        return tf.reshape(weights, [shape[0], shape[1], *self.grid])

    def caption_with_attention(self, image_bytes,
                               beam_width: int | None = None) -> dict[str, tf.Tensor]:
        """Captions, their words and each word's attention map for encoded images.

        Args:
            image_bytes: string tensor [batch] of JPEG/PNG files.
            beam_width: overrides the model's beam width (1 = greedy).

        Returns:
            caption [batch], output_tokens [batch, time] ("" after the caption's end) and
            attention [batch, time, h, w] (zero after the end).
        """
        images = decode_images(image_bytes, self.image_size, self.max_image_pixels)
        ids = self.generate(images, beam_width=beam_width)
        end = self.vocabulary.index(END)
        words = tf.equal(tf.cumsum(tf.cast(tf.equal(ids, end), tf.int32), axis=1), 0) & (ids > 0)
        maps = self.attention_maps(images, ids) * tf.cast(words, self.compute_dtype)[..., None,
                                                                                   None]
        return {"caption": self.ids_to_text(ids),
                "output_tokens": tf.where(words, tf.gather(self.vocab_table, ids), ""),
                "attention": maps}

    def caption_bytes(self, image_bytes, beam_width: int | None = None) -> tf.Tensor:
        """Caption strings [batch] for encoded JPEG/PNG images [batch] (the serving path).

        Args:
            image_bytes: string tensor [batch].
            beam_width: overrides the model's beam width (1 = greedy).
        """
        return self.caption(decode_images(image_bytes, self.image_size, self.max_image_pixels),
                            beam_width=beam_width)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "vocabulary": self.vocabulary, "image_size": self.image_size,
            "encoder": self.encoder_name, "encoder_alpha": self.encoder_alpha,
            "encoder_weights": self.encoder_weights,
            "encoder_bn_momentum": self.encoder_bn_momentum,
            "trainable_encoder_blocks": self.trainable_encoder_blocks,
            "attention_regularization": self.attention_regularization,
            "normalize_features": self.normalize_features,
            "residual_attention": self.residual_attention,
            "max_image_pixels": self.max_image_pixels,
            "embed_dim": self.embed_dim,
            "units": self.units, "cell": self.cell_type, "attention": self.use_attention,
            "dropout": self.dropout_rate, "augment": self.augment,
            "max_length": self.max_length, "beam_width": self.beam_width,
            "length_penalty": self.length_penalty, "seed": self.seed,
        })
        return config

    @classmethod
    def from_config(cls, config: dict) -> Captioner:
        # Restored weights replace the encoder's, so never download or read them again.
        return cls(**{**config, "encoder_weights": "none"})


def doubly_stochastic_penalty(weights, mask) -> tf.Tensor:
    """Show, Attend and Tell's attention penalty: mean over positions of (1 - sum_t alpha)^2.

    Args:
        weights: attention [captions, time, positions].
        mask: [captions, time] True at real (non-padding) input steps; captions that are all
            padding do not count.
    """
    mask = tf.cast(mask, weights.dtype)
    totals = tf.reduce_sum(weights * mask[..., None], axis=1)  # [captions, positions]
    per_caption = tf.reduce_mean(tf.square(1.0 - totals), axis=-1)
    real = tf.reduce_max(mask, axis=1)
    return tf.reduce_sum(per_caption * real) / tf.maximum(tf.reduce_sum(real), 1.0)
