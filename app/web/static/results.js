// Results page: every run dir's summaries (metrics, evaluation, gradient lab), report and plots.
"use strict";

const MAX_ROWS = 40;

function formatValue(value) {
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) >= 1e4 || (value !== 0 && Math.abs(value) < 1e-3)
      ? value.toExponential(3) : value.toFixed(4);
  }
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v === "number")) {
      if (value.length <= 6) return value.map(formatValue).join(", ");
      return `${formatValue(value[value.length - 1])} (last of ${value.length})`;
    }
    return value.length <= 4 && value.every((v) => typeof v !== "object")
      ? value.join(", ") : `${value.length} items`;
  }
  if (value === null) return "—";
  return String(value);
}

// Nested JSON -> [dotted key, shown value] rows.
function flatten(data, prefix = "", rows = []) {
  if (data && typeof data === "object" && !Array.isArray(data)) {
    Object.entries(data).forEach(([key, value]) => {
      flatten(value, prefix ? `${prefix}.${key}` : key, rows);
    });
  } else {
    rows.push([prefix || "value", formatValue(data)]);
  }
  return rows;
}

function summaryTable(name, data) {
  const box = el("div");
  box.appendChild(el("h3", name));
  const table = el("table", null, "kv");
  const rows = flatten(data);
  rows.slice(0, MAX_ROWS).forEach(([key, value]) => {
    const tr = el("tr");
    tr.append(el("td", key), el("td", value));
    table.appendChild(tr);
  });
  box.appendChild(table);
  if (rows.length > MAX_ROWS) {
    box.appendChild(el("p", `… and ${rows.length - MAX_ROWS} more in ${name}`, "muted small"));
  }
  return box;
}

function runUrl(path) {
  return "/runs/" + path.split("/").map(encodeURIComponent).join("/");
}

// Inline Markdown: **bold** and `code`; everything else stays text.
function inline(parent, text) {
  text.split(/(\*\*[^*]+\*\*|`[^`]+`)/).forEach((part) => {
    if (!part) return;
    if (part.startsWith("**") && part.endsWith("**") && part.length > 4) {
      parent.appendChild(el("strong", part.slice(2, -2)));
    } else if (part.startsWith("`") && part.endsWith("`") && part.length > 2) {
      parent.appendChild(el("code", part.slice(1, -1)));
    } else {
      parent.appendChild(document.createTextNode(part));
    }
  });
  return parent;
}

function markdownTable(lines) {
  const table = el("table", null, "kv md-table");
  const cells = (line) => line.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
  lines.forEach((line, i) => {
    if (i === 1 && /^[\s|:-]+$/.test(line)) return;  // the header separator
    const tr = el("tr");
    cells(line).forEach((cell) => tr.appendChild(inline(el(i === 0 ? "th" : "td"), cell)));
    table.appendChild(tr);
  });
  return table;
}

// The subset of Markdown the run reports use: headings, paragraphs, lists, tables, images.
// Images are looked up in the run dir; `shown` collects them so they are not drawn twice.
function renderMarkdown(text, runPath, shown) {
  const box = el("div", null, "markdown");
  const blocks = text.replace(/\r/g, "").split(/\n\s*\n/);
  blocks.forEach((block) => {
    const lines = block.split("\n").filter((line) => line.trim());
    let heading;
    while (lines.length && (heading = lines[0].match(/^(#{1,4})\s+(.*)$/))) {
      box.appendChild(inline(el(`h${heading[1].length + 2}`), heading[2]));
      lines.shift();
    }
    if (!lines.length) return;
    if (lines.every((line) => line.trim().startsWith("|"))) {
      box.appendChild(markdownTable(lines));
      return;
    }
    const image = lines[0].match(/^!\[([^\]]*)\]\(([^)\s]+)\)$/);
    if (image && lines.length === 1 && !/[:\\]|^\//.test(image[2])) {
      const path = `${runPath}/${image[2]}`;
      shown.add(path);
      const img = el("img");
      img.src = runUrl(path);
      img.alt = image[1];
      img.className = "md-image";
      box.appendChild(img);
      return;
    }
    if (lines.every((line) => /^\s*[-*]\s/.test(line))) {
      const list = el("ul");
      lines.forEach((line) => list.appendChild(inline(el("li"), line.replace(/^\s*[-*]\s/, ""))));
      box.appendChild(list);
      return;
    }
    box.appendChild(inline(el("p"), lines.join(" ")));
  });
  return box;
}

function runCard(run) {
  const card = el("section", null, "card run");
  card.id = `run-${run.path}`;
  card.dataset.task = run.task;
  const title = el("h2", run.path);
  title.appendChild(el("span", run.kind === "lab" ? "gradient lab" : "training", "tag"));
  title.appendChild(el("span", new Date(run.modified * 1000).toLocaleString(), "muted"));
  card.appendChild(title);
  const shown = new Set();
  if (run.report) card.appendChild(renderMarkdown(run.report, run.path, shown));
  const summaries = el("div", null, "summaries");
  Object.entries(run.summaries).forEach(([name, data]) => {
    summaries.appendChild(summaryTable(name, data));
  });
  if (summaries.children.length && run.report) {
    // The report already tells the story; its raw numbers stay one click away.
    const details = el("details");
    details.appendChild(el("summary", `numbers (${Object.keys(run.summaries).join(", ")})`));
    details.appendChild(summaries);
    card.appendChild(details);
  } else if (summaries.children.length) {
    card.appendChild(summaries);
  }
  const images = run.images.filter((path) => !shown.has(path));
  if (images.length) {
    const plots = el("div", null, "plots");
    images.forEach((path) => {
      const figure = el("figure");
      const link = el("a");
      link.href = runUrl(path);
      link.target = "_blank";
      const img = el("img");
      img.src = runUrl(path);
      img.alt = path;
      img.loading = "lazy";
      link.appendChild(img);
      figure.append(link, el("figcaption", path.split("/").slice(-1)[0]));
      plots.appendChild(figure);
    });
    card.appendChild(plots);
  }
  return card;
}

async function loadRuns() {
  try {
    const result = await callApi("/api/runs");
    const container = document.getElementById("runs");
    container.replaceChildren();
    if (!result.runs.length) {
      const empty = document.getElementById("empty");
      withCode(empty, `No runs under ${result.runs_dir} yet — train one with ` +
        "`rnnkit train sentiment` or run the gradient lab with `rnnkit lab gradients`.");
      empty.hidden = false;
      return;
    }
    const index = document.getElementById("run-index");
    result.runs.forEach((run) => {
      container.appendChild(runCard(run));
      const link = el("a", run.path);
      link.href = `#run-${run.path}`;
      index.appendChild(link);
    });
    index.hidden = false;
  } catch (err) {
    showError(err);
  }
}

document.addEventListener("DOMContentLoaded", loadRuns);
