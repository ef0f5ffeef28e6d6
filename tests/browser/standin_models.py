"""STAND-IN models for protocol testing of the web app — not the trained task models.

Each stand-in is a few lines of plain TensorFlow exported with rnnkit's one export function under
the real model's name and with the real model's signatures (input and output names, dtypes and
shapes), so the app, the serving client and the model server are exercised exactly as with the
trained exports, in seconds. Their answers are simple and predictable so tests can check them:

- sentiment: counts words from a small lexicon; "loved ... wonderful" is positive, "dull ...
  worst" negative; with the real preset's `classify` signature (classes and scores).
- translator: word-by-word from a small dictionary; its attention looks at the aligned word.
- captioner: describes the decoded image's size and brightest colour channel, which proves the
  uploaded bytes reached the model intact.
- questions: stands for a classifier a user trained on their own CSV (a name no code knows,
  found in the exports folder): three classes by the question's first word.
- pos_tagger: a tagger: DET for "the"/"a", PUNCT for punctuation, NOUN for the rest.
- storyteller: a language model: after "the" its next words are film, cast, story, ending, music;
  after any other word the, a, and, of, "."; its continuation is always "film was good".
"""

from __future__ import annotations

from pathlib import Path

from app.model_kinds import ATTENTION_SIGNATURE  # the real translator's second signature

POSITIVE = ("wonderful", "superb", "loved", "great", "moving", "brilliant", "worth")
NEGATIVE = ("dull", "worst", "predictable", "boring", "awful", "thin", "long")
SPANISH = {"¿": "", "dónde": "where", "está": "is", "la": "the", "biblioteca": "library",
           "?": "?", "hace": "it's", "mucho": "very", "frío": "cold", "hoy": "today",
           ".": ".", "me": "i", "gusta": "like", "leer": "reading", "libros": "books"}


def _tokens(text):
    """Lower-cased words with punctuation split off, like the real models' standardisation."""
    import tensorflow as tf

    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"([^\pL\pN\s'])", r" \1 ")
    return tf.strings.split(tf.strings.strip(text))


def _table(keys, values, default):
    import tensorflow as tf

    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values)), default)


def _sentiment_module():
    import tensorflow as tf

    module = tf.Module()
    module.lexicon = _table(list(POSITIVE + NEGATIVE),
                            [1.0] * len(POSITIVE) + [-1.0] * len(NEGATIVE), 0.0)

    def positive(text):
        return tf.sigmoid(1.5 * tf.reduce_sum(module.lexicon.lookup(_tokens(text)), axis=1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        probability = positive(text)
        label = tf.where(probability >= 0.5, "positive", "negative")
        return {"probability": probability, "label": label}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(inputs):
        text = tf.io.parse_example(inputs, {"text": tf.io.FixedLenFeature([], tf.string)})["text"]
        probability = positive(text)
        classes = tf.tile(tf.constant([["negative", "positive"]]), [tf.shape(probability)[0], 1])
        return {"classes": classes, "scores": tf.stack([1 - probability, probability], axis=1)}

    return module, {"serving_default": serving_default, "classify": classify}


QUESTION_CLASSES = ("LOC", "HUM", "NUM")


def _questions_module():
    import tensorflow as tf

    module = tf.Module()
    module.first_words = _table(["where", "who", "how"], [0, 1, 2], 2)

    def probabilities(text):
        first = _tokens(text)[:, :1].to_tensor(default_value="")[:, 0]
        return tf.nn.softmax(3.0 * tf.one_hot(module.first_words.lookup(first),
                                              len(QUESTION_CLASSES)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        p = probabilities(text)
        label = tf.gather(tf.constant(QUESTION_CLASSES), tf.argmax(p, axis=1))
        return {"label": label, "probability": tf.reduce_max(p, axis=1), "probabilities": p}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(inputs):
        text = tf.io.parse_example(inputs, {"text": tf.io.FixedLenFeature([], tf.string)})["text"]
        p = probabilities(text)
        return {"classes": tf.tile(tf.constant([QUESTION_CLASSES]), [tf.shape(p)[0], 1]),
                "scores": p}

    return module, {"serving_default": serving_default, "classify": classify}


def _tagger_module():
    import tensorflow as tf

    module = tf.Module()

    def tag(tokens):
        punctuation = tf.strings.regex_full_match(tokens, r"[^\pL\pN]+")
        determiner = (tokens == "the") | (tokens == "a")
        return tf.where(punctuation, "PUNCT", tf.where(determiner, "DET", "NOUN"))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        tokens = _tokens(text)
        return {"tokens": tokens.to_tensor(default_value=""),
                "tags": tf.ragged.map_flat_values(tag, tokens).to_tensor(default_value="")}

    return module, {"serving_default": serving_default}


def _translator_module():
    import tensorflow as tf

    module = tf.Module()
    module.dictionary = _table(list(SPANISH), list(SPANISH.values()), "<unk>")

    def words(tokens):
        english = module.dictionary.lookup(tokens)
        return tf.strings.reduce_join(english, axis=-1, separator=" ")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        joined = words(_tokens(text))
        return {"translation": tf.strings.strip(tf.strings.regex_replace(joined, " +", " "))}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.string, name="text")])
    def translate_with_attention(text):
        source = _tokens(text)[0]
        english = module.dictionary.lookup(source)
        kept = english != ""  # words English leaves out, such as ¿
        output = tf.concat([tf.boolean_mask(english, kept), ["[END]"]], axis=0)
        # Each output word looks at the source word it came from; [END] at the last one.
        n = tf.size(source)
        aligned = tf.concat([tf.boolean_mask(tf.range(n), kept), [n - 1]], axis=0)
        weights = 0.8 * tf.one_hot(aligned, n) + 0.2 / tf.cast(n, tf.float32)
        translation = tf.strings.regex_replace(words(source), " +", " ")
        # One sentence: every output has a leading axis of 1, as the real signature's.
        return {"translation": tf.strings.strip(translation)[None],
                "source_tokens": source[None], "output_tokens": output[None],
                "attention": weights[None]}

    return module, {"serving_default": serving_default,
                    ATTENTION_SIGNATURE: translate_with_attention}


def _captioner_module():
    import tensorflow as tf

    module = tf.Module()

    def describe(image_bytes):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        shape = tf.shape(image)
        channel = tf.argmax(tf.reduce_mean(tf.cast(image, tf.float32), axis=[0, 1]))
        colour = tf.gather(tf.constant(["red", "green", "blue"]), channel)
        return tf.strings.join(["a mostly ", colour, " picture, ", tf.strings.as_string(shape[1]),
                                " by ", tf.strings.as_string(shape[0]), " pixels"])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serving_default(image_bytes):
        return {"caption": tf.map_fn(describe, image_bytes,
                                     fn_output_signature=tf.TensorSpec([], tf.string))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def caption_with_attention(image_bytes):
        # Word k looks only at cell k % 4 of a 2 x 2 grid, row by row.
        caption = tf.map_fn(describe, image_bytes,
                            fn_output_signature=tf.TensorSpec([], tf.string))
        words = tf.strings.split(caption).to_tensor("")
        count = tf.shape(words)[1]
        cells = tf.one_hot(tf.range(count) % 4, 4)
        maps = tf.reshape(cells, [1, count, 2, 2])
        maps = tf.tile(maps, [tf.shape(words)[0], 1, 1, 1])
        return {"caption": caption, "output_tokens": words, "attention": maps}

    return module, {"serving_default": serving_default,
                    "caption_with_attention": caption_with_attention}


def _language_model_module():
    import tensorflow as tf

    module = tf.Module()
    after_the = tf.constant([["film", "cast", "story", "ending", "music"]])
    after_other = tf.constant([["the", "a", "and", "of", "."]])
    probabilities = tf.constant([[0.4, 0.2, 0.1, 0.05, 0.05]])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        return {"continuation": tf.fill(tf.shape(text), "film was good")}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def next_words(text):
        last = _tokens(text)[:, -1:].to_tensor(default_value="")[:, 0]
        words = tf.where((last == "the")[:, None], after_the, after_other)
        return {"words": words,
                "probabilities": tf.tile(probabilities, [tf.shape(text)[0], 1])}

    return module, {"serving_default": serving_default, "next_words": next_words}


STANDINS = {"sentiment": _sentiment_module, "translator": _translator_module,
            "captioner": _captioner_module, "questions": _questions_module,
            "pos_tagger": _tagger_module, "storyteller": _language_model_module}


def export_standins(base_path: Path) -> Path:
    """Export every stand-in under `base_path/<name>/1/` and write a model config serving them.

    Args:
        base_path: the exports folder.

    Returns:
        The model config file (TF Serving's text-format ModelServerConfig).
    """
    from serving.export import export_saved_model

    entries = []
    for name, build in STANDINS.items():
        module, signatures = build()
        export_saved_model(module, signatures, base_path, name)
        entries.append(f'  config {{ name: "{name}" base_path: "{(base_path / name).resolve()}" '
                       f'model_platform: "tensorflow" }}')
    config = base_path / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return config
