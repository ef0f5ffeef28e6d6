"""The web app in a real browser (Chromium through Playwright) against a real model server.

The model server serves STAND-IN models with the real models' names and signatures (see
standin_models.py): these tests check the app, the gRPC client and the server protocol end to end,
not model quality.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from web_harness import web_app_without_server

from app.web.server import WebServer


def _upload(tmp_path: Path, name: str, size: tuple[int, int], colour: tuple[int, int, int],
            kind: str) -> Path:
    path = tmp_path / name
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, kind)
    path.write_bytes(buffer.getvalue())
    return path


def _open(page, web_app: str, model: str, kind: str) -> None:
    """Open the try page on one model and wait for its view."""
    page.goto(f"{web_app}/try#{model}")
    page.wait_for_selector(f"#view[data-model='{model}'][data-kind='{kind}']:not([hidden])")


def _run(page, text: str) -> None:
    """Type into the view's text field, submit, wait for the result or an error."""
    page.fill("#view-text", text)
    page.click("#view-submit")
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])")
    assert page.is_hidden("#error"), page.text_content("#error")


def test_try_page_lists_every_served_model_by_kind(page, web_app: str, artifacts: Path) -> None:
    page.goto(f"{web_app}/try")
    page.wait_for_selector("#model-list:not([hidden])")
    listed = dict(page.eval_on_selector_all(
        "#model-list button",
        "bs => bs.map(b => [b.dataset.model, b.querySelector('.tag').textContent])"))
    # Registry models the server serves, and `questions`, found only in the exports folder.
    assert listed == {"sentiment": "classify", "translator": "seq2seq", "captioner": "caption",
                      "questions": "classify", "pos_tagger": "tag",
                      "storyteller": "language_model"}
    assert "sentiment_bow (NOT_LOADED)" in page.text_content("#other-models")
    # The first model is shown at once; a click switches the view and the address.
    page.wait_for_selector("#view[data-model='sentiment']:not([hidden])")
    page.click("#model-list button[data-model='pos_tagger']")
    page.wait_for_selector("#view[data-kind='tag']")
    assert page.url.endswith("#pos_tagger")
    assert page.get_attribute("#model-list button.active", "data-model") == "pos_tagger"


def test_classifier_view_shows_every_class(page, web_app: str, artifacts: Path) -> None:
    _open(page, web_app, "sentiment", "classify")
    _run(page, "A wonderful, moving film with superb acting. I loved every minute.")
    assert page.text_content("#label") == "positive"
    assert float(page.text_content("#probability")) > 0.9
    classes = page.eval_on_selector_all(
        "#classes li", "rows => rows.map(r => [r.dataset.class, +r.dataset.probability])")
    assert [name for name, _ in classes] == ["positive", "negative"]
    assert abs(sum(p for _, p in classes) - 1) < 1e-4 and classes[0][1] > 0.9
    assert page.get_attribute("#server-status", "class") == "server-status up"
    assert re.fullmatch(r"served by sentiment version 1 in [\d.]+ ms",
                        page.text_content("#served-by"))
    page.screenshot(path=artifacts / "web-classify.png")

    page.fill("#view-text", "Dull and predictable: the worst film of the year.")
    page.keyboard.press("Control+Enter")  # Ctrl+Enter submits as the button does
    page.wait_for_function("() => document.querySelector('#label')?.textContent === 'negative'")
    assert float(page.text_content("#probability")) < 0.1


def test_a_users_own_classifier_appears_with_no_code(page, web_app: str,
                                                      artifacts: Path) -> None:
    _open(page, web_app, "questions", "classify")
    _run(page, "Who wrote Hamlet?")
    assert page.text_content("#label") == "HUM"
    classes = page.eval_on_selector_all(
        "#classes li", "rows => rows.map(r => [r.dataset.class, +r.dataset.probability])")
    assert [name for name, _ in classes] == ["HUM", "LOC", "NUM"]
    assert classes[0][1] > 0.8 and abs(sum(p for _, p in classes) - 1) < 1e-4
    page.screenshot(path=artifacts / "web-classify-user-model.png")


def test_tagger_view_colours_tokens_by_tag(page, web_app: str, artifacts: Path) -> None:
    _open(page, web_app, "pos_tagger", "tag")
    _run(page, "The cat saw a dog.")
    tokens = page.eval_on_selector_all(
        "#tagged .token", "ts => ts.map(t => [t.querySelector('.token-text').textContent, "
                          "t.dataset.tag, getComputedStyle(t).backgroundColor])")
    assert [(word, tag) for word, tag, _ in tokens] == [
        ("the", "DET"), ("cat", "NOUN"), ("saw", "NOUN"), ("a", "DET"), ("dog", "NOUN"),
        (".", "PUNCT")]
    colours = {tag: colour for _, tag, colour in tokens}
    assert len(set(colours.values())) == 3  # one colour per tag, the same on every token
    assert all(colours[tag] == colour for _, tag, colour in tokens)
    page.screenshot(path=artifacts / "web-tag.png")


def test_next_word_view_suggests_as_you_type_and_continues(page, web_app: str,
                                                         artifacts: Path) -> None:
    _open(page, web_app, "storyteller", "language_model")

    def suggestions() -> list[str]:
        return page.eval_on_selector_all("#next-words .word-choice",
                                         "cs => cs.map(c => c.dataset.word)")

    page.type("#view-text", "I watched the")  # typed key by key, no submit
    page.wait_for_selector("#next-words .word-choice:first-child[data-word='film']")
    assert suggestions() == ["film", "cast", "story", "ending", "music"]
    page.click("#next-words .word-choice[data-word='film']")
    assert page.input_value("#view-text") == "I watched the film "
    page.wait_for_selector("#next-words .word-choice:first-child[data-word='the']")
    page.click("#view-submit")
    for _ in range(100):  # the page's CSP forbids wait_for_function's string evaluation
        if "was good" in page.input_value("#view-text"):
            break
        page.wait_for_timeout(100)
    assert page.input_value("#view-text") == "I watched the film film was good "
    assert page.is_hidden("#error")
    page.screenshot(path=artifacts / "web-next-word.png")


def test_seq2seq_view_draws_the_attention_heat_map(page, web_app: str,
                                                   artifacts: Path) -> None:
    _open(page, web_app, "translator", "seq2seq")
    _run(page, "¿Dónde está la biblioteca?")
    assert page.is_visible("#attention"), page.text_content("#result")
    assert page.text_content("#output-text") == "where is the library ?"
    columns = page.locator("#heatmap thead th").all_text_contents()[1:]
    rows = page.locator("#heatmap tbody th").all_text_contents()
    assert columns == ["¿", "dónde", "está", "la", "biblioteca", "?"]
    assert rows == ["where", "is", "the", "library", "?", "[END]"]
    weights = [[float(w) for w in row] for row in page.eval_on_selector_all(
        "#heatmap tbody tr",
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(td => td.dataset.weight))")]
    # The stand-in aligns each English word with its Spanish source word.
    assert [row.index(max(row)) for row in weights] == [1, 2, 3, 4, 5, 5]
    page.screenshot(path=artifacts / "web-seq2seq.png", full_page=True)


def test_caption_view_sends_the_uploaded_image(page, web_app: str, artifacts: Path,
                                               tmp_path: Path) -> None:
    _open(page, web_app, "captioner", "caption")
    uploads = (("red.png", (64, 48), (220, 30, 30), "PNG", "a mostly red picture, 64 by 48 pixels"),
               ("sky.jpg", (120, 90), (40, 90, 230), "JPEG",
                "a mostly blue picture, 120 by 90 pixels"))
    for name, size, colour, kind, expected in uploads:
        page.set_input_files("#image", str(_upload(tmp_path, name, size, colour, kind)))
        page.click("#caption")
        page.wait_for_function(
            "text => document.querySelector('#caption-text').textContent === text", arg=expected)
        assert page.is_visible("#preview")
        assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth") \
            == size[0]
        # One picture per word, each lit where that word looked: word k at cell k % 4.
        words = page.eval_on_selector_all("#caption-attention canvas",
                                          "cs => cs.map(c => c.dataset.word)")
        assert words == expected.split()
        corners = page.eval_on_selector_all("#caption-attention canvas", """cs => cs.map(c => {
            const ctx = c.getContext('2d');
            const at = (x, y) => ctx.getImageData(x, y, 1, 1).data.slice(0, 3)
                .reduce((a, b) => a + b);
            return [at(4, 4), at(c.width - 5, 4), at(4, c.height - 5),
                    at(c.width - 5, c.height - 5)];
        })""")
        for k, brightness in enumerate(corners):
            assert brightness.index(max(brightness)) == k % 4, (k, brightness)
    page.screenshot(path=artifacts / "web-caption.png")


def test_models_page_lists_versions_and_states(page, web_app: str, artifacts: Path) -> None:
    page.goto(f"{web_app}/models")
    page.wait_for_selector("#models-card:not([hidden])")
    table = {row[0]: row[1:] for row in page.eval_on_selector_all(
        "#models tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")}
    assert table["sentiment"][:4] == ["classify", "1", "AVAILABLE", "classify, serving_default"]
    assert table["translator"][:4] == ["seq2seq", "1", "AVAILABLE",
                                       "serving_default, translate_with_attention"]
    assert table["captioner"][:3] == ["caption", "1", "AVAILABLE"]
    assert table["pos_tagger"][:3] == ["tag", "1", "AVAILABLE"]
    assert table["questions"][:3] == ["classify", "1", "AVAILABLE"]
    assert table["sentiment_bow"][2] == "NOT_LOADED"
    page.click("#models a[href='/try#questions']")
    page.wait_for_selector("#view[data-model='questions']:not([hidden])")
    page.screenshot(path=artifacts / "web-models.png")


def test_results_page_shows_curves_metrics_and_the_lab(page, web_app: str,
                                                       artifacts: Path) -> None:
    page.goto(f"{web_app}/results")
    page.wait_for_selector(".run")
    runs = page.locator(".run h2").all_text_contents()
    assert any(text.startswith("sentiment/20250101-120000") for text in runs)
    assert any(text.startswith("lab/20250102-090000") for text in runs)
    assert "0.8432" in page.text_content("[data-task='sentiment'] .summaries")
    report = "[data-task='lab'] .markdown"
    assert page.text_content(f"{report} h3") == "Gradient lab"
    assert page.text_content(f"{report} strong") == "vanishes"
    assert page.locator(f"{report} tr").all_text_contents() == [
        "cellT=100", "vanilla RNN0.167", "LSTM0.002 ✓"]
    # Every plot must load from /runs/ (a broken image has naturalWidth 0); the lab's plot sits
    # in its report and is not drawn twice.
    page.wait_for_function("() => [...document.querySelectorAll('.run img')].every("
                           "img => img.complete && img.naturalWidth > 0)")
    images = page.eval_on_selector_all(".run img", "imgs => imgs.map(i => i.alt)")
    assert sorted(images) == ["gradients", "sentiment/20250101-120000/curves.png"]
    page.screenshot(path=artifacts / "web-results.png", full_page=True)


@pytest.fixture()
def down_app(runs_dir: Path) -> Iterator[WebServer]:
    """The app pointed at a port where no model server runs."""
    with web_app_without_server(runs_dir) as server:
        yield server


def test_pages_say_when_the_model_server_is_down(page, down_app: WebServer,
                                                 artifacts: Path) -> None:
    address = down_app.api.server
    page.goto(f"{down_app.url}/try")
    error = page.wait_for_selector("#error:not([hidden])")
    assert error.text_content().startswith(f"model server not reachable at {address}")
    assert page.text_content("#error code").startswith("rnnkit serve")
    page.wait_for_selector("#server-status.down")
    page.screenshot(path=artifacts / "web-server-down.png")
    page.goto(f"{down_app.url}/models")
    error = page.wait_for_selector("#error:not([hidden])")
    assert "not reachable" in error.text_content()
    assert page.is_hidden("#models-card")
