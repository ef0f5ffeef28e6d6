"""Translation text processing: standardisation keeps accents and ¿ ¡, runs in a graph."""

from __future__ import annotations

import unicodedata

import pytest
import tensorflow as tf

from models.translation_text import add_start_end, detokenize, standardize


def _standardize(*sentences: str) -> list[str]:
    return [s.decode() for s in standardize(tf.constant(list(sentences))).numpy()]


def test_standardize_splits_punctuation_and_keeps_accents():
    assert _standardize("¿Dónde está la BIBLIOTECA?", "¡Él es Ñandú, señor!") == [
        "¿ dónde está la biblioteca ?", "¡ él es ñandú , señor !"]


def test_standardize_keeps_word_internal_apostrophes_and_hyphens():
    assert _standardize("I don’t know her e-mail.") == ["i don't know her e-mail ."]


@pytest.mark.parametrize("sentence", ["¿Dónde está el niño?", "ÁRBOL pingüino ǘ"])
def test_decomposed_input_matches_composed(sentence):
    # macOS and some keyboards send e + U+0301 instead of é; both must map to the same tokens.
    nfd = unicodedata.normalize("NFD", sentence)
    assert nfd != sentence
    composed, decomposed = _standardize(sentence, nfd)
    assert composed == decomposed
    assert unicodedata.normalize("NFC", composed) == composed


def test_standardize_is_the_same_in_a_graph():
    sentences = tf.constant(["¿Qué tal?", unicodedata.normalize("NFD", "Está aquí."), ""])
    eager = standardize(sentences).numpy().tolist()
    graph = tf.function(standardize)(sentences).numpy().tolist()
    assert eager == graph
    assert graph[2] == b""


def test_start_end_and_detokenize():
    assert add_start_end(tf.constant(["hola ."])).numpy().tolist() == [b"[START] hola . [END]"]
    tokens = tf.constant([["where", "is", "tom", "?", ""], ["", "", "", "", ""],
                          ["i", "think", "i'm", "ill", "."]])
    assert [s.decode() for s in detokenize(tokens).numpy()] == [
        "Where is tom?", "", "I think I'm ill."]
    assert detokenize(tf.constant([["¿", "dónde", "?"]])).numpy()[0].decode() == "¿dónde?"
