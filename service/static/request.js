// Shows covers as they are rendered: polls the request's status and adds a card per new cover
// (cloned from the page's own template, so a card looks the same with or without this script).
(function () {
  "use strict";
  const grid = document.getElementById("covers");
  const template = document.getElementById("cover-template");
  if (!grid || !template) return;
  const requestId = grid.dataset.request;
  const status = document.getElementById("status");
  const progress = document.getElementById("progress");

  function addCard(image) {
    if (document.getElementById("image-" + image.image_id)) return;
    const card = template.content.firstElementChild.cloneNode(true);
    card.id = "image-" + image.image_id;
    card.dataset.image = image.image_id;
    const img = card.querySelector("img");
    img.src = image.thumb_url;
    img.alt = "cover " + (image.image_index + 1);
    card.querySelector("form").action = "/images/" + encodeURIComponent(image.image_id) + "/review";
    grid.appendChild(card);
  }

  async function poll() {
    let delay = 1000;
    try {
      const response = await fetch("/api/requests/" + encodeURIComponent(requestId), {credentials: "same-origin"});
      if (response.ok) {
        const body = await response.json();
        body.images.forEach(addCard);
        status.textContent = body.status;
        progress.textContent = body.images.length + " of " + body.num_images + " covers";
        grid.dataset.status = body.status;
        if (body.status === "done" || body.status === "failed") return;
      } else if (response.status === 503) {
        delay = 1000 * (parseInt(response.headers.get("Retry-After") || "2", 10) || 2);
      } else {
        return;
      }
    } catch (err) {
      delay = 3000;
    }
    setTimeout(poll, delay);
  }

  if (grid.dataset.status !== "done" && grid.dataset.status !== "failed") poll();
})();
