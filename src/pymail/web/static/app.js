// pymail webmail: live updates of the open folder (server-sent events).
// Loaded as a file (the Content-Security-Policy allows no inline script).
"use strict";

// Buttons with data-confirm ask before submitting (deleting a folder).
document.addEventListener("click", (e) => {
  const button = e.target.closest && e.target.closest("button[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) {
    e.preventDefault();
  }
});

(function () {
  const body = document.body;
  const events = body.dataset.events;
  if (!events || !window.EventSource) {
    return;
  }
  const folder = body.dataset.folder;
  const page = body.dataset.page || "0";
  const rowsUrl = "/mail/" + encodeURIComponent(folder) + "/rows?page=" + page;

  function setCount(unseen) {
    for (const li of document.querySelectorAll("aside.folders li")) {
      if (li.dataset.folder !== folder) {
        continue;
      }
      let count = li.querySelector(".count");
      if (unseen > 0) {
        if (!count) {
          count = document.createElement("span");
          count.className = "count";
          li.appendChild(count);
        }
        count.textContent = String(unseen);
      } else if (count) {
        count.remove();
      }
    }
  }

  async function refreshRows() {
    const checked = new Set(
      Array.from(document.querySelectorAll("#rows input[name=uid]:checked"), (i) => i.value));
    const response = await fetch(rowsUrl, { credentials: "same-origin" });
    if (!response.ok) {
      return;
    }
    const html = await response.text();
    const template = document.createElement("template");
    template.innerHTML = "<table><tbody>" + html + "</tbody></table>";
    const fresh = template.content.querySelector("tbody");
    const rows = document.getElementById("rows");
    if (!rows || !fresh) {
      return;
    }
    for (const input of fresh.querySelectorAll("input[name=uid]")) {
      input.checked = checked.has(input.value);
    }
    rows.replaceChildren(...fresh.children);
    const empty = document.querySelector("p.empty");
    if (empty && rows.children.length) {
      empty.remove();
    }
    body.dataset.updated = String(Date.now());
  }

  const source = new EventSource(events);
  source.addEventListener("mailbox", (e) => {
    const data = JSON.parse(e.data);
    setCount(data.unseen);
    const range = document.querySelector("nav.pages span");
    if (range && page === "0") {
      const shown = Math.min(50, data.exists);
      range.textContent = (shown ? "1" : "0") + "\u2013" + shown + " of " + data.exists;
    }
    refreshRows();
  });
  source.addEventListener("hello", () => {
    body.dataset.live = "1";
  });
  source.addEventListener("signedout", () => {
    source.close();
    window.location.assign("/signin");
  });
})();
