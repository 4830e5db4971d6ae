// precache console: live progress of a task page over Server-Sent Events (the session cookie
// authenticates the stream; no token ever reaches this script).
"use strict";

function follow(matrix) {
  const columns = new Map();
  matrix.querySelectorAll("thead th[data-target]").forEach((th, index) => {
    columns.set(th.dataset.target, index);
  });
  const events = new EventSource(matrix.dataset.events);
  const show = (message) => {
    const task = JSON.parse(message.data);
    const status = document.getElementById("task-status");
    status.textContent = task.status;
    status.className = "status " + task.status;
    document.getElementById("task-progress").textContent = task.progress;
    (task.urls || []).forEach((url, row) => {
      (url.edges || []).forEach((pair) => {
        const column = columns.get(pair.target);
        const cell = document.getElementById("cell-" + row + "-" + column);
        if (cell) {
          cell.textContent = pair.status;
          cell.className = "status " + pair.status;
          cell.title = pair.error || "";
        }
      });
    });
  };
  events.addEventListener("progress", show);
  events.addEventListener("end", (message) => {
    show(message);
    events.close();
    matrix.dataset.ended = "true";
  });
  events.addEventListener("error", () => {
    if (events.readyState === EventSource.CLOSED) {
      matrix.dataset.ended = "true";
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const matrix = document.getElementById("matrix");
  if (matrix) {
    follow(matrix);
  }
});
