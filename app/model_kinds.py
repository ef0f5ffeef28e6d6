"""What kind of rnnkit model a served model is, read from its signature metadata.

Every export's signatures use fixed input and output names per kind (docs/app.md, "Model
kinds"), so the kind shows in TF Serving's GetModelMetadata answer itself: the web page and
`rnnkit predict` work with any model server, with any model a user exported, and with no list of
model names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_SIGNATURE = "serving_default"
TEXT_INPUT = "text"
IMAGE_INPUT = "image_bytes"
# The classifier's TF Serving Classify signature: serialized tf.Examples in, classes and scores out.
CLASSIFY_SIGNATURE = "classify"
# The text-to-text models' second signature: one sentence in; translation, source_tokens,
# output_tokens and attention [1, out_len, source_len] out.
ATTENTION_SIGNATURE = "translate_with_attention"
# The captioners' second signature: image_bytes in; caption, output_tokens [batch, words] and
# attention [batch, words, h, w] (where each word looked on the encoder's grid) out.
CAPTION_ATTENTION_SIGNATURE = "caption_with_attention"
# Output names, by kind (the first name of a tuple is the one the kind's task exports).
CLASS_OUTPUTS = ("label", "probability", "probabilities")
TAG_OUTPUTS = ("tokens", "tags")
TEXT_OUTPUTS = ("output_text", "translation")
CAPTION_OUTPUTS = ("output_text", "caption")
# Language models: serving_default continues the text; `next_words` lists the likeliest next
# words with their probabilities; `generate` samples (temperature, top_k, seed, words inputs).
LANGUAGE_MODEL_OUTPUTS = ("continuation",)
NEXT_WORDS_SIGNATURE = "next_words"
GENERATE_SIGNATURE = "generate"


def signature_defs(metadata: Any) -> dict[str, dict[str, dict[str, str]]]:
    """Signature name -> {"inputs": {alias: dtype}, "outputs": {alias: dtype}}.

    Args:
        metadata: a GetModelMetadata answer in TF Serving's REST JSON shape (what
            serving.client.ServingClient.metadata returns).
    """
    if not isinstance(metadata, Mapping):
        return {}
    defs = metadata.get("metadata", {}).get("signature_def", {})
    defs = defs.get("signature_def", defs) if isinstance(defs, Mapping) else {}
    result = {}
    for name, signature in defs.items():
        if name.startswith("__") or not isinstance(signature, Mapping):
            continue  # __saved_model_init_op and the like
        result[name] = {side: {alias: str(info.get("dtype", "")) if isinstance(info, Mapping)
                               else "" for alias, info in (signature.get(side) or {}).items()}
                        for side in ("inputs", "outputs")}
    return result


def model_kind(signatures: Mapping[str, Mapping[str, Mapping[str, str]]]) -> str | None:
    """The model's kind (classify, tag, seq2seq, caption, language_model) from its signatures,
    or None.

    Args:
        signatures: what `signature_defs` returns.
    """
    default = signatures.get(DEFAULT_SIGNATURE)
    if not default:
        return None
    inputs, outputs = default["inputs"], default["outputs"]
    if IMAGE_INPUT in inputs and any(name in outputs for name in CAPTION_OUTPUTS):
        return "caption"
    if TEXT_INPUT not in inputs:
        return None
    if all(name in outputs for name in TAG_OUTPUTS):
        return "tag"
    if any(name in outputs for name in LANGUAGE_MODEL_OUTPUTS):
        return "language_model"
    if any(name in outputs for name in TEXT_OUTPUTS):
        return "seq2seq"
    if "label" in outputs or "probabilities" in outputs:
        return "classify"
    return None


def text_output(outputs: Mapping[str, Any], kind: str) -> str | None:
    """The name of the output holding a seq2seq model's or captioner's text, if present.

    Args:
        outputs: output name -> anything (a signature's outputs or a Predict answer).
        kind: "seq2seq" or "caption".
    """
    names = TEXT_OUTPUTS if kind == "seq2seq" else CAPTION_OUTPUTS
    return next((name for name in names if name in outputs), None)
