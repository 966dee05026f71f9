// pymail webmail: live updates of the open folder (server-sent events).
// Loaded as a file (the Content-Security-Policy allows no inline script).
"use strict";

// The compose form carries the largest message the server takes: attachments
// that would make it larger (base64 adds a third) are refused here, before
// the browser uploads them only to get 413 or "too large" back.
document.addEventListener("submit", (e) => {
  const form = e.target;
  const max = Number(form.dataset && form.dataset.maxBytes);
  if (!max) {
    return;
  }
  let total = 0;
  for (const input of form.querySelectorAll("input[type=file]")) {
    for (const file of input.files) {
      total += file.size;
    }
  }
  if (total * 4 / 3 <= max) {
    return;
  }
  e.preventDefault();
  let note = form.parentNode.querySelector("p.error.size");
  if (!note) {
    note = document.createElement("p");
    note.className = "error size";
    note.setAttribute("role", "alert");
    form.parentNode.insertBefore(note, form);
  }
  const mb = (n) => (n / 1048576).toFixed(1) + " MB";
  note.textContent = "The attachments are too large to send: " + mb(total) +
    " (" + mb(total * 4 / 3) + " once encoded); a message may be at most " + mb(max) + ".";
});

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
