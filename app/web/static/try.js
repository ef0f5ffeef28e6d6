// Try page: list every served model that has a view, show the chosen one's view.
"use strict";

let served = [];

function pickModel(name) {
  const model = served.find((m) => m.name === name) || served[0];
  if (!model) return;
  clearError();
  document.querySelectorAll("#model-list button").forEach((button) => {
    const active = button.dataset.model === model.name;
    button.classList.toggle("active", active);
    button.setAttribute("aria-pressed", String(active));
  });
  const view = document.getElementById("view");
  view.dataset.model = model.name;
  view.dataset.kind = model.kind;
  document.getElementById("view-title").textContent = model.name;
  const version = model.versions.find((v) => v.state === "AVAILABLE");
  document.getElementById("view-kind").textContent =
    `${KIND_NAMES[model.kind]} · version ${version ? version.version : "?"} · signatures ` +
    model.signatures.join(", ");
  const body = document.getElementById("view-body");
  body.replaceChildren();
  VIEWS[model.kind](body, model);
  view.hidden = false;
  if (decodeURIComponent(location.hash.slice(1)) !== model.name) {
    history.replaceState(null, "", `#${encodeURIComponent(model.name)}`);
  }
}

const KIND_NAMES = {
  classify: "classifier (text → one of N labels)",
  tag: "tagger (tokens → one tag each)",
  seq2seq: "text to text (encoder-decoder with attention)",
  caption: "captioner (image → text)",
  language_model: "language model (text → the next words)",
};

async function loadModels() {
  try {
    const result = await callApi("/api/models");
    markServer(true);
    served = result.models.filter((m) => m.state === "AVAILABLE" && VIEWS[m.kind]);
    const list = document.getElementById("model-list");
    list.replaceChildren();
    served.forEach((model) => {
      const button = el("button", null, "model-button");
      button.type = "button";
      button.dataset.model = model.name;
      button.append(el("span", model.name, "model-name"), el("span", model.kind, "tag"));
      button.addEventListener("click", () => pickModel(model.name));
      list.appendChild(button);
    });
    list.hidden = !served.length;
    const others = result.models.filter((m) => !served.includes(m));
    const note = document.getElementById("other-models");
    note.textContent = others.length ? "Not shown: " + others.map((m) =>
      `${m.name} (${m.state === "AVAILABLE" ? "no view for its signatures" : m.state})`)
      .join(", ") + "." : "";
    note.hidden = !others.length;
    if (!served.length) {
      const empty = document.getElementById("no-models");
      empty.replaceChildren();
      withCode(empty, `The model server at ${result.server} serves no model yet — export one ` +
        "with `rnnkit export TASK` and serve it with `rnnkit serve`.");
      empty.hidden = false;
      return;
    }
    pickModel(decodeURIComponent(location.hash.slice(1)));
  } catch (err) {
    showError(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", () => pickModel(decodeURIComponent(location.hash.slice(1))));
  loadModels();
});
