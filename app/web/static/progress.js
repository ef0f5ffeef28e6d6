// The main job's progress on the Results page: each task's state and, while it trains, its epoch
// and live curves (the run's history.json, which the trainer rewrites every epoch).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const POLL_RUNNING_MS = 2000;  // well under any epoch: the view follows every one
const POLL_IDLE_MS = 10000;
const CURVE_COLOURS = ["#2f5bd3", "#e0762b", "#2e9d5b", "#b03a8f"];

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, String(value)));
  return node;
}

// The curves worth drawing: loss and val_loss on one chart, the first other metric on a second.
function curveGroups(history) {
  const keys = Object.keys(history).filter((k) => Array.isArray(history[k]) && k !== "learning_rate");
  const losses = keys.filter((k) => k === "loss" || k === "val_loss");
  const metric = keys.find((k) => !k.startsWith("val_") && !losses.includes(k));
  const groups = [];
  if (losses.length) groups.push(losses);
  if (metric) groups.push([metric, `val_${metric}`].filter((k) => keys.includes(k)));
  return groups;
}

// A small line chart of some history keys against the epoch, with a legend.
function lineChart(history, keys, width = 260, height = 120) {
  const pad = { left: 36, right: 8, top: 8, bottom: 18 };
  const values = keys.flatMap((k) => history[k]).filter((v) => Number.isFinite(v));
  const epochs = Math.max(...keys.map((k) => history[k].length));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 16}`, class: "chart",
    role: "img", "aria-label": keys.join(", ") });
  if (!values.length) return chart;
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (high === low) { high += 0.5; low -= 0.5; }
  const x = (i) => pad.left + (epochs > 1 ? i / (epochs - 1) : 0.5) * (width - pad.left - pad.right);
  const y = (v) => pad.top + (1 - (v - low) / (high - low)) * (height - pad.top - pad.bottom);
  chart.appendChild(svg("line", { x1: pad.left, y1: height - pad.bottom, x2: width - pad.right,
    y2: height - pad.bottom, class: "axis" }));
  [high, low].forEach((v) => {
    const label = svg("text", { x: pad.left - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" });
    label.textContent = formatNumber(v);
    chart.appendChild(label);
  });
  const last = svg("text", { x: width - pad.right, y: height - 4, "text-anchor": "end", class: "tick" });
  last.textContent = `epoch ${epochs}`;
  chart.appendChild(last);
  keys.forEach((key, n) => {
    const colour = CURVE_COLOURS[n % CURVE_COLOURS.length];
    const points = history[key].map((v, i) => [x(i), y(v)]).filter(([, py]) => Number.isFinite(py));
    chart.appendChild(svg("polyline", { points: points.map((p) => p.join(",")).join(" "),
      fill: "none", stroke: colour, "stroke-width": 2, "stroke-dasharray": key.startsWith("val_") ? "5 3" : "" }));
    points.forEach(([px, py]) => chart.appendChild(svg("circle", { cx: px, cy: py, r: 2.5, fill: colour })));
    const legend = svg("text", { x: pad.left + n * 110, y: height + 12, fill: colour, class: "legend" });
    legend.textContent = key;
    chart.appendChild(legend);
  });
  return chart;
}

function formatNumber(value) {
  if (!Number.isFinite(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

function jobRow(task) {
  const tr = el("tr");
  tr.dataset.task = task.task;
  tr.dataset.state = task.state;
  tr.appendChild(el("td", task.task));
  tr.appendChild(el("td", task.model));
  const state = el("td");
  state.appendChild(el("span", task.label, `job-state ${task.state}`));
  if (task.state === "training" && task.epochs) {
    const bar = el("progress");
    bar.max = task.epochs;
    bar.value = task.epoch || 0;
    state.appendChild(bar);
  }
  tr.appendChild(state);
  const curves = el("td", null, "curves");
  const history = task.history || {};
  if (["training", "evaluating", "exporting"].includes(task.state) || task.state === "interrupted") {
    curveGroups(history).forEach((keys) => curves.appendChild(lineChart(history, keys)));
  }
  tr.appendChild(curves);
  return tr;
}

function showJob(progress) {
  const box = document.getElementById("job");
  if (!progress) {
    box.hidden = true;
    return;
  }
  const started = new Date(progress.started * 1000).toLocaleString();
  const serving = progress.serving ? " · serving" : "";
  document.getElementById("job-title").textContent = `rnnkit run: ${progress.state}`;
  document.getElementById("job-meta").textContent =
    `${progress.profile} profile, started ${started}${serving}`;
  box.dataset.state = progress.state;
  const body = document.querySelector("#job-tasks tbody");
  body.replaceChildren(...progress.tasks.map(jobRow));
  box.hidden = false;
}

// Polls /api/progress; `onChange` runs when a task changes state (the results below are reloaded).
function watchProgress(onChange) {
  let states = "";
  async function poll() {
    let running = false;
    try {
      const { progress } = await callApi("/api/progress");
      showJob(progress);
      running = Boolean(progress && progress.state === "running");
      const now = progress ? progress.tasks.map((t) => `${t.task}:${t.state}`).join() : "";
      if (states && now !== states) onChange();
      states = now;
    } catch (err) {
      showError(err);
    }
    setTimeout(poll, running ? POLL_RUNNING_MS : POLL_IDLE_MS);
  }
  poll();
}
