// Results page: the main job's progress (progress.js), a report table of each task's newest run
// against its published anchors, then every run dir's figures, samples and raw JSON.
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
  const info = TASKS[run.task];
  const evaluation = run.summaries["evaluation.json"];
  if (info && evaluation && info.headline.some((key) => key in evaluation)) {
    card.appendChild(headlineLine(info, evaluation));
  }
  if (evaluation && Array.isArray(evaluation.samples)) card.appendChild(samplesTable(evaluation.samples));
  const summaries = el("div", null, "summaries");
  Object.entries(run.summaries).forEach(([name, data]) => {
    summaries.appendChild(summaryTable(name, data));
  });
  if (summaries.children.length) {
    // The report and the headline tell the story; the raw numbers stay one click away.
    const details = el("details", null, "raw");
    details.appendChild(el("summary", `raw JSON (${Object.keys(run.summaries).join(", ")})`));
    const links = el("p", null, "small");
    (run.files || Object.keys(run.summaries)).forEach((name) => {
      const link = el("a", name);
      link.href = runUrl(`${run.path}/${name}`);
      link.target = "_blank";
      links.append(link, " ");
    });
    details.append(links, summaries);
    card.appendChild(details);
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

// Registry facts per task (headline metrics, published anchors), from /api/runs.
let TASKS = {};

function metricText(value) {
  return typeof value === "number" ? formatValue(value) : (value === undefined ? "—" : String(value));
}

// `accuracy 0.8712 · f1 0.8690` for the task's headline metrics.
function headlineLine(info, evaluation) {
  const line = el("p", null, "headline");
  info.headline.forEach((key, i) => {
    if (i) line.append(" · ");
    line.append(`${key} `);
    line.appendChild(el("strong", metricText(evaluation[key])));
  });
  return line;
}

// The first sample outputs an evaluation keeps (translations: source, references, output).
function samplesTable(samples) {
  const box = el("details", null, "samples");
  box.open = true;
  box.appendChild(el("summary", `sample outputs (${Math.min(samples.length, 8)} of ${samples.length})`));
  const table = el("table", null, "table");
  const keys = Object.keys(samples[0] || {});
  const head = el("tr");
  keys.forEach((key) => head.appendChild(el("th", key)));
  table.appendChild(head);
  samples.slice(0, 8).forEach((sample) => {
    const tr = el("tr");
    keys.forEach((key) => {
      const value = sample[key];
      tr.appendChild(el("td", Array.isArray(value) ? value.join(" / ") : metricText(value)));
    });
    table.appendChild(tr);
  });
  box.appendChild(table);
  return box;
}

function duration(seconds) {
  if (typeof seconds !== "number") return "—";
  if (seconds < 60) return `${seconds.toFixed(0)} s`;
  return seconds < 3600 ? `${(seconds / 60).toFixed(1)} min` : `${(seconds / 3600).toFixed(1)} h`;
}

// One row per task: its newest evaluated run's headline metrics beside the published anchors.
function reportTable(runs) {
  const table = document.querySelector("#report-table tbody");
  table.replaceChildren();
  const newest = {};
  runs.forEach((run) => {
    if (run.kind !== "lab" && run.summaries["evaluation.json"] && !newest[run.task]) newest[run.task] = run;
  });
  Object.values(newest).forEach((run) => {
    const info = TASKS[run.task] || { headline: [], anchors: [] };
    const evaluation = run.summaries["evaluation.json"];
    const metrics = run.summaries["metrics.json"] || {};
    const tr = el("tr");
    tr.dataset.task = run.task;
    const link = el("a", run.task);
    link.href = `#run-${run.path}`;
    const task = el("td");
    task.append(link, el("div", run.run_id, "muted small"));
    tr.appendChild(task);
    const test = el("td", null, "num");
    const keys = info.headline.length ? info.headline
      : Object.keys(evaluation).filter((k) => typeof evaluation[k] === "number").slice(0, 3);
    keys.forEach((key) => test.appendChild(el("div", `${key} ${metricText(evaluation[key])}`)));
    tr.appendChild(test);
    const anchors = el("td", null, "small");
    if (!info.anchors.length) anchors.textContent = "—";
    info.anchors.forEach((anchor) => {
      const ours = evaluation[anchor.metric];
      const mark = typeof ours === "number" ? (ours >= anchor.value ? " ✓" : " ✗") : "";
      anchors.appendChild(el("div", `${anchor.metric} ${formatValue(anchor.value)}${mark} — ${anchor.source}`));
    });
    tr.appendChild(anchors);
    tr.appendChild(el("td", duration(metrics.train_wall_time_s), "num"));
    tr.appendChild(el("td", metrics.epochs_finished === undefined ? "—"
      : `${metrics.epochs_finished} (best ${metrics.best_epoch ?? "—"})`, "num"));
    table.appendChild(tr);
  });
  document.getElementById("report").hidden = !Object.keys(newest).length;
}

async function loadRuns() {
  try {
    const result = await callApi("/api/runs");
    TASKS = result.tasks || {};
    reportTable(result.runs);
    const container = document.getElementById("runs");
    container.replaceChildren();
    const index = document.getElementById("run-index");
    index.replaceChildren();
    if (!result.runs.length) {
      const empty = document.getElementById("empty");
      withCode(empty, `No runs under ${result.runs_dir} yet — train one with ` +
        "`rnnkit train sentiment` or run the gradient lab with `rnnkit lab gradients`.");
      empty.hidden = false;
      return;
    }
    document.getElementById("empty").hidden = true;
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

document.addEventListener("DOMContentLoaded", () => {
  loadRuns();
  // A task that changes state (a run finished, evaluated, exported) brings new results.
  watchProgress(loadRuns);
});
