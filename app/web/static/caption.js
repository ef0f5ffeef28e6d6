// Captioning page: send the chosen image's bytes as they are, show the caption beside it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("caption-form");
  const input = document.getElementById("image");
  const preview = document.getElementById("preview");
  let previewUrl = null;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    document.getElementById("result").hidden = true;
    const file = input.files[0];
    if (!file) {
      showError({ message: "no image chosen", fix: "choose a JPEG or PNG file first" });
      return;
    }
    const button = document.getElementById("caption");
    try {
      const result = await busy(button, "Captioning…", () => callApi("/api/caption", {
        method: "POST",
        headers: { "Content-Type": file.type || "application/octet-stream" },
        body: file,
      }));
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = URL.createObjectURL(file);
      preview.src = previewUrl;
      document.getElementById("caption-text").textContent = result.caption;
      document.getElementById("served-by").textContent = servedBy(result);
      document.getElementById("result").hidden = false;
      markServer(true);
    } catch (err) {
      showError(err);
    }
  });
});
