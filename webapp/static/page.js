// /pages/<name>: count this view with a JSON POST (a GET never counts one), then show it.
"use strict";
(async function () {
  const url = document.body.dataset.viewUrl;
  const outcome = document.getElementById("outcome");
  try {
    const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                body: "{}", cache: "no-store"});
    const body = await r.json();
    if (typeof body.views === "number") {
      document.getElementById("views").textContent = String(body.views);
      document.getElementById("cap").textContent = String(body.cap);
    }
    outcome.textContent = r.status === 200 ? "This view was counted."
      : r.status === 410 ? "The cap is reached: this view was not counted."
      : "Not counted: " + (body.error || ("HTTP " + r.status));
  } catch (e) {
    outcome.textContent = "Not counted: " + e.message;
  }
})();
