// Text-to-text view: text in, text out, and the attention the decoder paid to each source token.
"use strict";

// Rows are output tokens, columns source tokens; each cell is shaded by its weight.
function drawHeatmap(table, attention) {
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
}

function showOutputText(section, result) {
  section.replaceChildren();
  section.appendChild(el("label", "Output"));
  const output = el("p", result.output_text, "output-text");
  output.id = "output-text";
  section.append(output, servedByLine(result));
  if (result.attention) {
    const attention = el("div", null, "attention");
    attention.id = "attention";
    attention.append(el("h3", "Attention"), el("p", "Each row is an output token, each column " +
      "a source token; darker cells are where the decoder looked while writing that token.",
    "muted small"));
    const wrap = el("div", null, "heatmap-wrap");
    const table = el("table", null, "heatmap");
    table.id = "heatmap";
    wrap.appendChild(table);
    attention.appendChild(wrap);
    drawHeatmap(table, result.attention);
    section.appendChild(attention);
  } else if (result.attention_note) {
    const note = el("p", result.attention_note, "muted small");
    note.id = "attention-note";
    section.appendChild(note);
  }
  section.hidden = false;
}

VIEWS.seq2seq = (box, model) => {
  let section;
  textForm(box, { label: "Input text", button: "Run", busyLabel: "Running…",
    placeholder: "¿Dónde está la biblioteca?" },
  async (text) => {
    section.hidden = true;
    showOutputText(section, await postJson("/api/predict", { model: model.name, text }));
  });
  section = resultCard(box);
};
