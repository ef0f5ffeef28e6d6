// Captioner view: send the chosen image's bytes as they are, show the caption beside it.
"use strict";

VIEWS.caption = (box, model) => {
  const form = el("form", null, "card");
  form.id = "view-form";
  const label = el("label", "Image (JPEG or PNG)");
  label.htmlFor = "image";
  const input = el("input");
  input.id = "image";
  input.type = "file";
  input.accept = "image/jpeg,image/png";
  input.required = true;
  const row = el("div", null, "row");
  const button = el("button", "Caption it", "primary");
  button.id = "caption";
  button.type = "submit";
  row.appendChild(button);
  form.append(label, input, row);
  box.appendChild(form);

  const section = resultCard(box);
  section.classList.add("caption-result");
  const preview = el("img");
  preview.id = "preview";
  preview.alt = "the uploaded image";
  const text = el("div");
  const caption = el("p", null, "output-text");
  caption.id = "caption-text";
  const served = el("p", null, "muted small");
  served.id = "served-by";
  text.append(el("label", "Caption"), caption, served);
  section.append(preview, text);
  let previewUrl = null;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    section.hidden = true;
    const file = input.files[0];
    if (!file) {
      showError({ message: "no image chosen", fix: "choose a JPEG or PNG file first" });
      return;
    }
    try {
      const result = await busy(button, "Captioning…", () => callApi(
        `/api/caption?model=${encodeURIComponent(model.name)}`, {
          method: "POST",
          headers: { "Content-Type": file.type || "application/octet-stream" },
          body: file,
        }));
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = URL.createObjectURL(file);
      preview.src = previewUrl;
      caption.textContent = result.caption;
      served.textContent = servedBy(result);
      section.hidden = false;
      markServer(true);
    } catch (err) {
      showError(err);
    }
  });
};
