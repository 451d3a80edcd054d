// The live operator page of edge-inference: polls /api/status and /api/frames, draws each frame's result (boxes,
// rotated boxes, masks, keypoints, labels, a classifier's top classes) over its thumbnail. Plain JS, no library.
// Every text from the module (file names, labels, settings) is set with textContent, never parsed as HTML.
"use strict";

const STATUS_EVERY_MS = 2000;
const FRAMES_EVERY_MS = 1000;
const PALETTE = ["#ff3838", "#ff9d97", "#ff701f", "#ffb21d", "#cfd231", "#48f90a"]; // vision/annotate.py's, as RGB
const KEYPOINT_MIN_CONFIDENCE = 0.5;

const state = { latest: 0, capacity: 50, frames: new Map(), only: "", profile: "", profiles: new Set() };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

// -- drawing a result over a picture ---------------------------------------------------------------------------
function colour(classId) {
  return PALETTE[((classId % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

function drawResult(ctx, result, scale) {
  const detections = result.detections || [];
  const line = Math.max(1, Math.round(Math.min(ctx.canvas.width, ctx.canvas.height) / 160));
  const font = Math.max(10, line * 6);
  ctx.lineWidth = line;
  ctx.font = `${font}px sans-serif`;
  let drawn = 0;
  for (const det of detections.slice().reverse()) {
    for (const polygon of (det.mask && det.mask.polygons) || []) {
      ctx.fillStyle = colour(det.classId) + "66";
      path(ctx, polygon, scale);
      ctx.fill();
    }
  }
  for (const det of detections) {
    ctx.strokeStyle = colour(det.classId);
    let anchor;
    if (det.polygon) {
      path(ctx, det.polygon, scale);
      ctx.stroke();
      anchor = det.polygon.reduce((a, b) => (b[1] < a[1] ? b : a));
    } else {
      const [x1, y1, x2, y2] = det.box;
      ctx.strokeRect(x1 * scale, y1 * scale, (x2 - x1) * scale, (y2 - y1) * scale);
      anchor = [x1, y1];
    }
    for (const point of det.keypoints || []) {
      if (point.length > 2 && point[2] < KEYPOINT_MIN_CONFIDENCE) continue;
      ctx.fillStyle = colour(det.classId);
      ctx.beginPath();
      ctx.arc(point[0] * scale, point[1] * scale, line + 1.5, 0, 2 * Math.PI);
      ctx.fill();
    }
    label(ctx, `${det.label} ${det.confidence.toFixed(2)}`, anchor[0] * scale, anchor[1] * scale, colour(det.classId), font);
    drawn += 1;
  }
  if (result.classification) {
    (result.classification.top5 || []).forEach((entry, i) => {
      label(ctx, `${entry.label} ${entry.confidence.toFixed(2)}`, 4, (font + 6) * (i + 1), colour(entry.classId), font);
    });
    drawn += 1;
  }
  return drawn;
}

function path(ctx, points, scale) {
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x * scale, y * scale) : ctx.moveTo(x * scale, y * scale)));
  ctx.closePath();
}

function label(ctx, text, x, y, fill, font) {
  const width = ctx.measureText(text).width + 6;
  const top = Math.max(0, y - font - 4);
  ctx.fillStyle = fill;
  ctx.fillRect(x, top, width, font + 4);
  ctx.fillStyle = "#fff";
  ctx.fillText(text, x + 3, top + font);
}

function paint(canvas, url, result, onDone) {
  const image = new Image();
  image.onload = () => {
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0);
    const width = (result.frame && result.frame.width) || image.naturalWidth;
    const drawn = drawResult(ctx, result, image.naturalWidth / width);
    canvas.dataset.drawn = String(drawn);
    if (onDone) onDone(drawn);
  };
  image.onerror = () => {
    canvas.width = 320;
    canvas.height = 40;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#bbb";
    ctx.fillText(result.error ? "not decoded" : "no picture held", 8, 24);
    canvas.dataset.drawn = "0";
  };
  image.src = url;
}

// -- frames ----------------------------------------------------------------------------------------------------
// A frame's folder: its camera profile when one judged it (the result's `profile`), else its path's folder.
function folder(frame) {
  if (frame.profile) return frame.profile;
  const cut = frame.path.lastIndexOf("/");
  return cut > 0 ? frame.path.slice(0, cut) : "(top)";
}

function visible(frame) {
  if (state.profile && folder(frame) !== state.profile) return false;
  if (state.only === "detections") return frame.count > 0;
  if (state.only === "failed") return !frame.ok;
  return true;
}

function card(frame) {
  const node = el("div", { class: frame.ok ? "frame" : "frame failed", "data-id": frame.id, "data-count": frame.count });
  const canvas = el("canvas", { "data-drawn": "" });
  node.append(canvas);
  const caption = el("div", { class: "caption" });
  caption.append(el("div", { class: "path" }, frame.path));
  const count = frame.ok ? `${frame.count} found` : `failed: ${frame.result.error.code}`;
  caption.append(el("span", { class: frame.ok ? (frame.count ? "count" : "count zero") : "error" }, count));
  if (frame.labels.length) caption.append(el("span", {}, ` ${frame.labels.join(", ")}`));
  if (frame.profile) caption.append(el("span", { class: "muted" }, ` [${frame.profile}]`));
  caption.append(el("div", { class: "muted" }, (frame.processedAt || "").replace("T", " ").replace("Z", " UTC")));
  node.append(caption);
  node.addEventListener("click", () => openViewer(frame));
  paint(canvas, `/api/frames/${frame.id}/thumb.jpg`, frame.result);
  return node;
}

function showFrames() {
  const grid = $("frames");
  const shown = [...state.frames.values()].filter(visible).sort((a, b) => b.id - a.id);
  const wanted = new Set(shown.map((f) => String(f.id)));
  for (const node of [...grid.children]) if (!wanted.has(node.dataset.id)) node.remove();
  shown.forEach((frame, i) => {
    let node = grid.querySelector(`[data-id="${frame.id}"]`);
    if (!node) node = frame.node || (frame.node = card(frame));
    if (grid.children[i] !== node) grid.insertBefore(node, grid.children[i] || null);
  });
  $("noframes").hidden = shown.length > 0;
}

async function pollFrames() {
  const page = await getJson(`/api/frames?after=${state.latest}`);
  state.capacity = page.capacity;
  for (const frame of page.frames) {
    state.frames.set(frame.id, frame);
    if (!state.profiles.has(folder(frame))) {
      state.profiles.add(folder(frame));
      $("profile").append(el("option", { value: folder(frame) }, folder(frame)));
    }
  }
  state.latest = Math.max(state.latest, page.latest);
  const ids = [...state.frames.keys()].sort((a, b) => a - b);
  for (const id of ids.slice(0, Math.max(0, ids.length - state.capacity))) state.frames.delete(id);
  showFrames();
}

function openViewer(frame) {
  $("viewer-title").textContent = frame.path;
  $("viewer-json").textContent = JSON.stringify(frame.result, null, 2);
  const canvas = $("viewer-canvas");
  const thumb = `/api/frames/${frame.id}/thumb.jpg`;
  paint(canvas, frame.fullImage ? `/api/frames/${frame.id}/full.jpg` : thumb, frame.result);
  $("viewer").showModal();
}

// -- status ----------------------------------------------------------------------------------------------------
function number(value, digits = 0) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

function showStatus(s) {
  const badge = $("state");
  const alarms = Object.entries(s.alarms || {});
  badge.textContent = s.paused ? "paused" : Object.keys(s.intakeBlocked || {}).length ? "intake blocked" : s.ready ? "running" : "not ready";
  badge.className = "badge " + (!s.ready ? "bad" : s.paused || alarms.length ? "paused" : "ok");
  const m = s.model || {};
  const rollout = s.rollout || {};
  const lanes = [["model", rollout], ["candidate", rollout.candidate || {}]]
    .filter(([, lane]) => lane.state && lane.state !== "idle")
    .map(([name, lane]) => ` · ${name} rollout: ${lane.state}${lane.target ? " " + (lane.target.name || "") + " " + (lane.target.version || "") : ""}`);
  $("model").textContent = `${m.name || "?"} ${m.version || ""} · ${m.task || "?"} · ${m.provider || "?"}${lanes.join("")}`;
  const f = s.figures || {};
  $("fps").textContent = number(f.framesPerSecond, 1);
  $("latency").textContent = f.latencyMs ? `${number(f.latencyMs.p50)} / ${number(f.latencyMs.p95)} ms` : "-";
  const q = s.queues || {};
  $("queues").textContent = `${number(q.frames)} / ${number(q.prepared)} / ${number(q.done)}`;
  $("inflight").textContent = number(s.inFlight);
  $("outbox").textContent = s.outboxDepth === null ? "local" : number(s.outboxDepth);
  const counts = s.frames || {};
  $("totals").textContent = `${number(counts.ok || 0)} / ${number(counts.failed || 0)}`;
  const list = $("alarms");
  list.replaceChildren(...(alarms.length ? alarms.map(([name, a]) => alarmItem(name, a)) : [el("li", { class: "muted" }, "none")]));
  $("shares").className = "plain shares";
  $("shares").replaceChildren(...Object.entries(s.shares || {}).map(([name, share]) => {
    const item = el("li", {}, `${name} `);
    item.append(el("span", { class: share.state === "ok" ? "share-ok" : "share-bad" }, share.state));
    item.append(el("span", { class: "muted" }, ` ${share.path}${share.why ? ": " + share.why : ""}`));
    return item;
  }));
  $("settings").replaceChildren(...Object.entries(s.settings || {}).map(([key, value]) => {
    const row = el("tr");
    row.append(el("td", {}, key), el("td", {}, typeof value === "object" ? JSON.stringify(value) : String(value)));
    return row;
  }));
  drawChart((f.lastHour || []));
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function alarmItem(name, alarm) {
  const item = el("li", { class: `alarm ${alarm.severity || ""}`, "data-alarm": name }, name);
  if (alarm.message) item.append(el("div", { class: "muted" }, alarm.message));
  return item;
}

function drawChart(minutes) {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  canvas.width = canvas.clientWidth || canvas.width; // drawn at the size it is shown: crisp text
  const w = canvas.width, h = canvas.height, pad = 24;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#6b7480";
  ctx.font = "11px sans-serif";
  const now = Date.now() / 1000;
  const maxFps = Math.max(1, ...minutes.map((m) => m.framesPerSecond));
  const maxLat = Math.max(1, ...minutes.map((m) => m.latencyMs));
  const x = (t) => pad + ((t - (now - 3600)) / 3600) * (w - 2 * pad);
  ctx.fillText(`${maxFps.toFixed(1)} fps`, 2, 10);
  ctx.fillText(`${maxLat.toFixed(0)} ms`, w - 60, 10);
  ctx.fillText("-60 min", pad, h - 4);
  ctx.fillText("now", w - pad - 16, h - 4);
  const bar = Math.max(2, (w - 2 * pad) / 60 - 2);
  ctx.fillStyle = "#4a90d9";
  for (const m of minutes) {
    const bh = (m.framesPerSecond / maxFps) * (h - 2 * pad);
    ctx.fillRect(x(m.t), h - pad - bh, bar, bh);
  }
  ctx.strokeStyle = "#c62828";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  minutes.forEach((m, i) => {
    const y = h - pad - (m.latencyMs / maxLat) * (h - 2 * pad);
    if (i) ctx.lineTo(x(m.t) + bar / 2, y); else ctx.moveTo(x(m.t) + bar / 2, y);
  });
  ctx.stroke();
}

// -- polling ---------------------------------------------------------------------------------------------------
function every(ms, work) {
  const run = async () => {
    if (!document.hidden) {
      try {
        await work();
      } catch (error) {
        $("state").textContent = "disconnected";
        $("state").className = "badge bad";
      }
    }
    setTimeout(run, ms);
  };
  run();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const radio of document.querySelectorAll('input[name="only"]')) {
    radio.addEventListener("change", () => { state.only = radio.value; showFrames(); });
  }
  $("profile").addEventListener("change", (event) => { state.profile = event.target.value; showFrames(); });
  every(STATUS_EVERY_MS, async () => showStatus(await getJson("/api/status")));
  every(FRAMES_EVERY_MS, pollFrames);
});
