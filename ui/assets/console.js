// Carrel console: progressive enhancement only; every page works without it.
// Served from the console itself; the Content-Security-Policy allows no other script.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]')?.getAttribute("content") ?? "";

// Ask before destructive actions.
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!globalThis.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
  });
}

// More log lines from the JSON API, appended in place.
for (const link of document.querySelectorAll("a[data-more]")) {
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    const response = await fetch(link.getAttribute("data-more"), {
      headers: { "Accept": "application/json", "X-CSRF-Token": csrf },
      credentials: "same-origin",
    });
    if (!response.ok) return;
    const page = await response.json();
    const body = document.querySelector("#log tbody");
    for (const line of page.lines) {
      const row = document.createElement("tr");
      row.className = `level-${line.level}`;
      row.dataset.id = String(line.id);
      for (
        const [cls, text] of [
          ["at", line.at.replace("T", " ").replace(/\.\d{3}Z$/, "Z")],
          ["level", line.level],
          ["msg", line.message],
        ]
      ) {
        const cell = document.createElement("td");
        cell.className = cls;
        cell.textContent = text;
        row.append(cell);
      }
      body.append(row);
    }
    if (page.next === null) link.remove();
    else {
      const url = new URL(link.getAttribute("data-more"), location.href);
      url.searchParams.set("after", String(page.next));
      link.setAttribute("data-more", url.pathname + url.search);
    }
  });
}

// Pages of running work refresh themselves.
if (document.body.dataset.live === "1") {
  setTimeout(() => location.reload(), 5000);
}
