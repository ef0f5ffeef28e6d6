"""`rnnkit predict` against the embedded model server, for every kind of model.

The server serves the STAND-IN models of standin_models.py (real signatures, simple answers).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from app.cli import main


@pytest.fixture(scope="module")
def served(model_server) -> str:
    """The model server's gRPC address, once every stand-in is AVAILABLE."""
    model_server.wait_until_served()
    return model_server.address


def _predict(capsys, served: str, model: str, *inputs: str) -> dict:
    assert main(["predict", "--model", model, "--server", served, *inputs]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("model", "text", "kind", "expected"), [
    ("sentiment", "I loved this wonderful film.", "classify", {"label": ["positive"]}),
    ("questions", "Where is Lima?", "classify", {"label": ["LOC"]}),
    ("pos_tagger", "The cat sat.", "tag", {"tokens": [["the", "cat", "sat", "."]],
                                           "tags": [["DET", "NOUN", "NOUN", "PUNCT"]]}),
    ("translator", "¿Dónde está la biblioteca?", "seq2seq",
     {"translation": ["where is the library ?"]}),
])
def test_predict_answers_every_text_kind(capsys, served: str, model: str, text: str, kind: str,
                                         expected: dict) -> None:
    reply = _predict(capsys, served, model, text)
    assert reply["kind"] == kind and reply["model"] == model
    assert {name: reply["outputs"][name] for name in expected} == expected


def test_predict_captions_image_paths(capsys, served: str, tmp_path: Path) -> None:
    paths = []
    for name, size, colour in (("red.png", (64, 48), (220, 30, 30)),
                               ("blue.png", (30, 20), (10, 20, 240))):
        buffer = io.BytesIO()
        Image.new("RGB", size, colour).save(buffer, "PNG")
        (tmp_path / name).write_bytes(buffer.getvalue())
        paths.append(str(tmp_path / name))
    reply = _predict(capsys, served, "captioner", paths[0], f"@{paths[1]}")
    assert reply["kind"] == "caption"
    assert reply["outputs"]["caption"] == ["a mostly red picture, 64 by 48 pixels",
                                           "a mostly blue picture, 30 by 20 pixels"]

    assert main(["predict", "--model", "captioner", "--server", served,
                 str(tmp_path / "missing.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: cannot read image") and err.count("\n") == 1
