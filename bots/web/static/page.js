// The operator's page: the live queue from Server-Sent Events, and the playground.
"use strict";

const csrf = document.querySelector('meta[name="csrf"]').content;
const mine = new Set(); // requests this page submitted: their takes end in the player
let snapshot = JSON.parse(document.getElementById("snapshot").textContent);
let received = Date.now() / 1000; // when the snapshot's "now" was true, in this clock

function age(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function renderQueue() {
  const body = document.querySelector("#queue tbody");
  const elapsed = Date.now() / 1000 - received;
  body.replaceChildren();
  for (const job of snapshot.queue) {
    const row = document.createElement("tr");
    row.dataset.job = job.id;
    row.dataset.request = job.request;
    row.className = "state-" + job.state + (mine.has(job.request) ? " mine" : "");
    cell(row, job.position === null ? "—" : String(job.position));
    cell(row, job.state);
    cell(row, age(job.age + elapsed));
    cell(row, job.backend || "—");
    cell(row, job.platform);
    cell(row, job.take);
    cell(row, job.id).title = job.line;
    body.appendChild(row);
  }
  document.getElementById("queue-empty").hidden = snapshot.queue.length > 0;
  const slots = document.getElementById("slots");
  slots.replaceChildren();
  for (const s of snapshot.slots) {
    const li = document.createElement("li");
    li.textContent = s.backend + ": " + s.in_use + (s.capacity === null ? " in use" : " of " + s.capacity + " in use");
    slots.appendChild(li);
  }
}

function showVideo(url) {
  const player = document.getElementById("player");
  player.hidden = false;
  player.src = url;
  player.play().catch(() => {}); // muted, so the browser lets it start on its own
}

function onChange(change) {
  if (!mine.has(change.request)) return;
  const status = document.getElementById("try-status");
  status.textContent = "Take " + change.job + ": " + change.state;
  if (change.state === "failed" || change.state === "canceled") {
    const error = document.getElementById("try-error");
    error.textContent = change.message;
    error.hidden = false;
  }
  if (change.state === "done" && change.video) showVideo(change.video);
}

function follow() {
  const live = document.getElementById("live");
  const events = new EventSource("/events");
  events.addEventListener("open", () => { live.textContent = "live"; });
  events.addEventListener("error", () => { live.textContent = "reconnecting…"; });
  events.addEventListener("snapshot", (e) => {
    snapshot = JSON.parse(e.data);
    received = Date.now() / 1000;
    renderQueue();
  });
  events.addEventListener("change", (e) => onChange(JSON.parse(e.data)));
}

document.getElementById("try").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const error = document.getElementById("try-error");
  const status = document.getElementById("try-status");
  error.hidden = true;
  status.textContent = "Sending…";
  const reply = await fetch("/api/playground", {
    method: "POST",
    body: new FormData(form),
    headers: { "X-CSRF-Token": csrf },
    credentials: "same-origin",
  });
  const body = await reply.json().catch(() => ({ error: "The server answered " + reply.status + "." }));
  if (!reply.ok) {
    status.textContent = "Refused.";
    error.textContent = body.error;
    error.hidden = false;
    return;
  }
  mine.add(body.request);
  status.textContent = "Queued" + (body.position ? ", position " + body.position : "") + ".";
  renderQueue();
});

for (const link of document.querySelectorAll("a.recent")) {
  link.addEventListener("click", (e) => { e.preventDefault(); showVideo(link.dataset.video); });
}
for (const when of document.querySelectorAll(".when")) {
  if (when.dataset.at) when.textContent = new Date(Number(when.dataset.at) * 1000).toLocaleString();
}
setInterval(renderQueue, 1000); // ages move on between events
renderQueue();
follow();
