// Classifier view: text in; the predicted label and every class with its probability.
"use strict";

function showClasses(section, result) {
  section.replaceChildren();
  const verdict = el("div", null, "verdict");
  const label = el("span", result.label, "badge");
  label.id = "label";
  if (["positive", "negative"].includes(result.label)) label.classList.add(result.label);
  const probability = el("strong", result.probability.toFixed(3));
  probability.id = "probability";
  verdict.append(label, el("span", "probability", "muted"), probability);
  const list = el("ol", null, "classes");
  list.id = "classes";
  result.classes.forEach((item) => {
    const row = el("li");
    row.dataset.class = item.name;
    row.dataset.probability = item.probability;
    const bar = el("span", null, "bar");
    bar.appendChild(el("span", null, "bar-fill")).style.width =
      `${(item.probability * 100).toFixed(1)}%`;
    row.append(el("span", item.name, "class-name"), bar,
      el("span", item.probability.toFixed(3), "class-probability"));
    list.appendChild(row);
  });
  section.append(verdict, list, servedByLine(result));
  section.hidden = false;
}

VIEWS.classify = (box, model) => {
  let section;
  textForm(box, { label: "Text", multiline: true, button: "Classify",
    busyLabel: "Classifying…", placeholder: "Type or paste a text… (Ctrl+Enter classifies it)" },
  async (text) => {
    section.hidden = true;
    showClasses(section, await postJson("/api/predict", { model: model.name, text }));
  });
  section = resultCard(box);
};
