// Tagger view: a sentence in; each token coloured by its tag, the tag written under it.
"use strict";

const TAG_COLOURS = ["#dbe7ff", "#d9f2e3", "#ffe7c7", "#f6d9f0", "#e3ddff", "#d4f1f4",
  "#fde2df", "#eef3c9", "#e6e6e6", "#ffd9b3"];

// The same tag gets the same colour on every sentence.
function tagColour(tag) {
  let hash = 0;
  for (const char of tag) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return TAG_COLOURS[hash % TAG_COLOURS.length];
}

function showTags(section, result) {
  section.replaceChildren();
  const line = el("div", null, "tagged");
  line.id = "tagged";
  result.tokens.forEach((token, i) => {
    const tag = result.tags[i] ?? "";
    const chip = el("span", null, "token");
    chip.dataset.tag = tag;
    chip.style.background = tagColour(tag);
    chip.title = `${token}: ${tag}`;
    chip.append(el("span", token, "token-text"), el("span", tag, "token-tag"));
    line.appendChild(chip);
  });
  section.append(line, servedByLine(result));
  section.hidden = false;
}

VIEWS.tag = (box, model) => {
  let section;
  textForm(box, { label: "Sentence", button: "Tag it", busyLabel: "Tagging…",
    placeholder: "Type a sentence; words are split at spaces" },
  async (text) => {
    section.hidden = true;
    showTags(section, await postJson("/api/predict", { model: model.name, text }));
  });
  section = resultCard(box);
};
