// Models page: one table row per model version the server reports.
"use strict";

function modelRows(model) {
  const signatures = (model.signatures || []).join(", ");
  const kind = model.kind || "—";
  if (!model.versions.length) {
    return [[model.name, kind, "—", model.state, signatures, model.message || ""]];
  }
  return model.versions.map((v) =>
    [model.name, kind, v.version, v.state, signatures, v.message || model.message || ""]);
}

async function loadModels() {
  clearError();
  const card = document.getElementById("models-card");
  try {
    const result = await callApi("/api/models");
    const body = document.querySelector("#models tbody");
    body.replaceChildren();
    result.models.forEach((model) => {
      modelRows(model).forEach(([name, kind, version, state, signatures, message]) => {
        const tr = el("tr");
        tr.dataset.model = name;
        const link = el("a", name);
        link.href = `/try#${encodeURIComponent(name)}`;
        tr.append(el("td"), el("td", kind), el("td", version, "num"),
          el("td", state, `state ${state}`),
          el("td", signatures, "small"), el("td", message, "small muted"));
        if (model.state === "AVAILABLE" && model.kind) tr.cells[0].appendChild(link);
        else tr.cells[0].textContent = name;
        body.appendChild(tr);
      });
    });
    card.hidden = false;
    markServer(true);
    document.getElementById("checked").textContent =
      `checked ${new Date().toLocaleTimeString()} at ${result.server}`;
  } catch (err) {
    card.hidden = true;
    showError(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("refresh").addEventListener("click", loadModels);
  loadModels();
});
