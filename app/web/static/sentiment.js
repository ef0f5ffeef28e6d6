// Sentiment page: send the review, show the label and the probability of "positive".
"use strict";

function showSentiment(result) {
  const label = document.getElementById("label");
  label.textContent = result.label;
  label.className = `badge ${result.label}`;
  document.getElementById("probability").textContent = result.probability.toFixed(3);
  document.getElementById("meter-fill").style.left = `${(result.probability * 100).toFixed(1)}%`;
  document.getElementById("served-by").textContent = servedBy(result);
  document.getElementById("result").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("sentiment-form");
  const review = document.getElementById("review");
  wireExamples(review);
  review.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    document.getElementById("result").hidden = true;
    const button = document.getElementById("analyse");
    try {
      const result = await busy(button, "Analysing…", () => postJson("/api/sentiment", {
        text: review.value,
        model: document.getElementById("model").value,
      }));
      showSentiment(result);
      markServer(true);
    } catch (err) {
      showError(err);
    }
  });
});
