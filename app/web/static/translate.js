// Translation page: translate, then draw the attention weights as a coloured table.
"use strict";

// Rows are output tokens, columns source tokens; each cell is shaded by its weight.
function drawHeatmap(attention) {
  const table = document.getElementById("heatmap");
  table.replaceChildren();
  const weights = attention.weights;
  const strongest = Math.max(1e-9, ...weights.flat());
  const head = el("thead");
  const headRow = el("tr");
  headRow.appendChild(el("th"));
  attention.source_tokens.forEach((token) => headRow.appendChild(el("th", token)));
  head.appendChild(headRow);
  const body = el("tbody");
  weights.forEach((row, i) => {
    const tr = el("tr");
    tr.appendChild(el("th", attention.output_tokens[i] ?? ""));
    row.forEach((weight, j) => {
      const share = weight / strongest;
      const td = el("td", weight >= 0.1 ? weight.toFixed(2) : "");
      td.dataset.weight = weight;
      td.style.background = `rgba(47, 91, 211, ${share.toFixed(3)})`;
      td.style.color = share > 0.55 ? "#fff" : "#1d2430";
      td.title = `${attention.output_tokens[i] ?? ""} ← ${attention.source_tokens[j] ?? ""}: ` +
        weight.toFixed(3);
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  table.append(head, body);
  document.getElementById("attention").hidden = false;
}

function showTranslation(result) {
  document.getElementById("translation").textContent = result.translation;
  document.getElementById("served-by").textContent = servedBy(result);
  document.getElementById("result").hidden = false;
  const note = document.getElementById("attention-note");
  if (result.attention) {
    drawHeatmap(result.attention);
    note.hidden = true;
  } else {
    note.textContent = result.attention_note || "";
    note.hidden = !result.attention_note;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("translate-form");
  const source = document.getElementById("source");
  wireExamples(source);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    ["result", "attention", "attention-note"].forEach((id) => {
      document.getElementById(id).hidden = true;
    });
    const button = document.getElementById("translate");
    try {
      const result = await busy(button, "Translating…",
        () => postJson("/api/translate", { text: source.value }));
      showTranslation(result);
      markServer(true);
    } catch (err) {
      showError(err);
    }
  });
});
