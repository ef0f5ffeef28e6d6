// Language model view ("Next word"): type, and the likeliest next words appear as you type, like
// a phone keyboard's; a click on one adds it; "Continue" appends the model's greedy continuation.
"use strict";

const NEXT_WORD_DELAY_MS = 200; // wait for a pause in typing before asking

function showNextWords(list, result, field, refresh) {
  list.replaceChildren();
  result.next_words.forEach((item) => {
    const chip = el("button", null, "word-choice");
    chip.type = "button";
    chip.dataset.word = item.word;
    chip.dataset.probability = item.probability;
    chip.title = `probability ${item.probability.toFixed(3)}`;
    chip.append(el("span", item.word, "word-text"),
      el("span", item.probability.toFixed(2), "muted small"));
    chip.addEventListener("click", () => {
      field.value = `${field.value.trimEnd()} ${item.word} `.trimStart();
      field.focus();
      refresh();
    });
    list.appendChild(chip);
  });
}

VIEWS.language_model = (box, model) => {
  let section;
  let list;
  let timer = null;
  let asked = 0; // only the newest answer is shown when several are in flight

  async function refresh() {
    const text = field.value;
    const ticket = ++asked;
    if (!text.trim()) {
      section.hidden = true;
      return;
    }
    try {
      const result = await postJson("/api/predict", { model: model.name, text, mode: "next" });
      if (ticket !== asked) return;
      clearError();
      showNextWords(list, result, field, refresh);
      section.querySelector("#served-by").replaceWith(servedByLine(result));
      section.hidden = false;
    } catch (err) {
      if (ticket === asked) showError(err);
    }
  }

  const field = textForm(box, { label: "Text", button: "Continue", busyLabel: "Writing…",
    placeholder: "Start typing; the likeliest next words appear below" },
  async (text) => {
    const result = await postJson("/api/predict",
      { model: model.name, text, mode: "continue" });
    if (result.continuation) field.value = `${text.trimEnd()} ${result.continuation} `;
    await refresh();
  });
  field.autocomplete = "off";
  field.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, NEXT_WORD_DELAY_MS);
  });
  section = resultCard(box);
  list = el("div", null, "word-choices");
  list.id = "next-words";
  section.append(list, servedByLine({ model: model.name, elapsed_ms: 0 }));
};
