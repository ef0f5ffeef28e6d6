// Captioner view: send the chosen image's bytes as they are, show the caption beside it and,
// when the model exports its attention, the image once per word with where that word looked.
"use strict";

// Draw `image` with the word's attention map over it: a dark veil that lifts where the weight is
// high, the grid scaled up smoothly (as in Show, Attend and Tell's figures).
function drawAttention(canvas, image, map) {
  const rows = map.length;
  const cols = map[0].length;
  const peak = Math.max(...map.flat()) || 1;
  const grid = document.createElement("canvas");
  grid.width = cols;
  grid.height = rows;
  const cells = grid.getContext("2d").createImageData(cols, rows);
  map.flat().forEach((weight, i) => {
    cells.data[4 * i + 3] = Math.round(200 * (1 - weight / peak));
  });
  grid.getContext("2d").putImageData(cells, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(grid, 0, 0, canvas.width, canvas.height);
}

function showAttention(box, image, attention) {
  box.replaceChildren();
  if (!attention || !attention.words.length) return;
  box.append(el("h3", "Where each word looked"));
  const strip = el("div", null, "attention-words");
  attention.words.forEach((word, i) => {
    const figure = el("figure", null, "attention-word");
    const canvas = document.createElement("canvas");
    canvas.width = 128;
    canvas.height = Math.round(128 * image.naturalHeight / image.naturalWidth) || 128;
    canvas.dataset.word = word;
    drawAttention(canvas, image, attention.maps[i]);
    figure.append(canvas, el("figcaption", word));
    strip.appendChild(figure);
  });
  box.appendChild(strip);
}

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
  const maps = el("div");
  maps.id = "caption-attention";
  section.append(preview, text, maps);
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
      await preview.decode();
      showAttention(maps, preview, result.attention);
      caption.textContent = result.caption;
      served.textContent = servedBy(result);
      section.hidden = false;
      markServer(true);
    } catch (err) {
      showError(err);
    }
  });
};
