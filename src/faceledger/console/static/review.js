// Review page: check each opened photo's SHA-256 against the hash the ledger recorded, then draw
// both faces side by side at the same scale (eyes level, the same eye distance), with zoom, an
// original-resolution mode and overlays that can be hidden. The photo stays in this page: it is
// read from the file input, hashed with crypto.subtle and drawn on a canvas; it is never
// uploaded (the file inputs are outside the decision form and have no name). Only the verified
// hashes go into the form, and the service checks them against the ledger again.
"use strict";

const state = { probe: null, enrolled: null };  // {bitmap, geometry, sha}
// Eye distance over eye-to-mouth height of a frontal face (YuNet's points, median of 35 LFW
// faces within 10 degrees of frontal: 0.98, 10-90% 0.92-1.01). A face turned sideways narrows
// its eyes, one tilted up or down shortens the eye-to-mouth height: the larger of the two
// (eye-mouth height converted) is the face's size whatever its pose, so a turned face is drawn
// at the same scale as a frontal one (by eye distance alone, yaw -48 drew 1.45x too large).
const EYE_TO_MOUTH = 0.98;
const view = { zoom: 1, original: false, overlay: true };

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

function landmark(geometry, type) {
  return (geometry.Landmarks || []).find((l) => l.Type === type);
}

function geometryPx(item) {
  const { bitmap, geometry } = item;
  const iw = bitmap.width, ih = bitmap.height, box = geometry.BoundingBox;
  const out = { iw, ih };
  if (box) {
    out.box = { x: box.Left * iw, y: box.Top * ih, w: box.Width * iw, h: box.Height * ih };
  }
  const le = landmark(geometry, "eyeLeft"), re = landmark(geometry, "eyeRight");
  if (le && re) {
    out.eyes = { lx: le.X * iw, ly: le.Y * ih, rx: re.X * iw, ry: re.Y * ih };
    out.eyeDistance = Math.hypot(out.eyes.rx - out.eyes.lx, out.eyes.ry - out.eyes.ly);
    out.roll = Math.atan2(out.eyes.ry - out.eyes.ly, out.eyes.rx - out.eyes.lx);
    out.faceSize = out.eyeDistance;
    const ml = landmark(geometry, "mouthLeft"), mr = landmark(geometry, "mouthRight");
    if (ml && mr) {
      const mx = (ml.X + mr.X) / 2 * iw, my = (ml.Y + mr.Y) / 2 * ih;
      out.eyeMouth = Math.hypot(mx - (out.eyes.lx + out.eyes.rx) / 2, my - (out.eyes.ly + out.eyes.ry) / 2);
      out.faceSize = Math.max(out.eyeDistance, EYE_TO_MOUTH * out.eyeMouth);
    }
  }
  return out;
}

// The canvas's pixels are the screen's: its backing store is its CSS size times the device
// pixel ratio, so "original resolution" really is one photo pixel per screen pixel (a fixed
// 480 px canvas shown at 600 or 180 CSS px, on a 2x screen, was 2.5x or 0.75x of that).
function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const side = Math.max(1, Math.round((canvas.clientWidth || 480) * dpr));
  if (canvas.width !== side || canvas.height !== side) {
    canvas.width = side;
    canvas.height = side;
  }
  return dpr;
}

function draw(canvas, item, which) {
  const dpr = fitCanvas(canvas);
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#222";
  ctx.fillRect(0, 0, W, H);
  if (!item) {
    ctx.fillStyle = "#ddd";
    ctx.font = `${Math.round(W / 20)}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    ctx.fillText(`Open the ${which} photo below`, W / 2, H / 2);
    ctx.fillText("(its hash is checked first)", W / 2, H / 2 + W / 14);
    delete canvas.dataset.scale;
    return;
  }
  const g = geometryPx(item);
  let cx = g.iw / 2, cy = g.ih / 2, angle = 0, scale = Math.min(W / g.iw, H / g.ih);
  if (g.eyes) {
    angle = g.roll;
    // the same face size on both canvases: the same scale for the two faces, whatever the pose
    scale = (0.3 * W) / Math.max(g.faceSize, 1);
    const mx = (g.eyes.lx + g.eyes.rx) / 2, my = (g.eyes.ly + g.eyes.ry) / 2;
    const dy = (0.5 - 0.38) * H / scale;
    cx = mx - Math.sin(angle) * dy;
    cy = my + Math.cos(angle) * dy;
  } else if (g.box) {
    scale = (0.6 * W) / Math.max(g.box.w, g.box.h);
    cx = g.box.x + g.box.w / 2;
    cy = g.box.y + g.box.h / 2;
  }
  if (view.original) { scale = 1; angle = 0; }
  scale *= view.zoom;
  // screen pixels per photo pixel, as drawn (said under the face: above 1 is interpolation)
  canvas.dataset.scale = scale.toFixed(3);
  canvas.dataset.dpr = String(dpr);
  ctx.translate(W / 2, H / 2);
  ctx.scale(scale, scale);
  ctx.rotate(-angle);
  ctx.translate(-cx, -cy);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(item.bitmap, 0, 0);
  if (view.overlay) {
    ctx.lineWidth = 1.5 / scale;
    ctx.strokeStyle = "#ffd400";
    if (g.box) ctx.strokeRect(g.box.x, g.box.y, g.box.w, g.box.h);
    ctx.strokeStyle = "#00e5ff";
    for (const l of item.geometry.Landmarks || []) {
      // small rings beside the point, so the feature itself stays visible
      ctx.beginPath();
      ctx.arc(l.X * g.iw, l.Y * g.ih, 4 / scale, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  const shown = canvas.closest("figure").querySelector(".scale-line");
  if (shown) {
    shown.textContent = `drawn at ${scale.toFixed(2)} screen pixels per photo pixel` +
      (scale > 1.05 ? " (enlarged: detail between pixels is interpolated, not seen)" : "");
  }
}

function describe(which, item, figure) {
  const line = figure.querySelector(".facts-line");
  const g = geometryPx(item);
  const parts = [`photo ${g.iw}×${g.ih} px`];
  if (g.box) parts.push(`face ${Math.round(g.box.w)}×${Math.round(g.box.h)} px`);
  if (g.eyeDistance) parts.push(`eyes ${Math.round(g.eyeDistance)} px apart`);
  let pose = null, quality = null;
  try { pose = JSON.parse(line.dataset.pose || "null"); } catch (e) { pose = null; }
  try { quality = JSON.parse(line.dataset.quality || "null"); } catch (e) { quality = null; }
  if (pose) {
    parts.push(`pose yaw ${pose.Yaw.toFixed(0)}°, pitch ${pose.Pitch.toFixed(0)}°, roll ${pose.Roll.toFixed(0)}°`);
  } else if (g.roll !== undefined) {
    parts.push(`roll ${(g.roll * 180 / Math.PI).toFixed(0)}° (from the eyes; yaw and pitch not recorded)`);
  }
  if (quality) {
    parts.push(`sharpness ${quality.Sharpness.toFixed(0)}, brightness ${quality.Brightness.toFixed(0)}`);
  }
  line.textContent = parts.join(" · ");
  const canvas = figure.querySelector("canvas");
  canvas.setAttribute("aria-label", `${which} face, ${parts.slice(0, 2).join(", ")}`);
}

function redraw() {
  for (const figure of document.querySelectorAll(".compare figure")) {
    draw(figure.querySelector("canvas"), state[figure.dataset.which], figure.dataset.which);
  }
}

function updateForm() {
  const ok = Boolean(state.probe && state.enrolled);
  for (const input of document.querySelectorAll("input[data-needs-photos]")) {
    input.disabled = !ok;
    if (!ok && input.checked) input.checked = false;
  }
  const probe = document.getElementById("probe-sha256");
  const enrolled = document.getElementById("enrolled-sha256");
  if (probe) probe.value = state.probe ? state.probe.sha : "";
  if (enrolled) enrolled.value = state.enrolled ? state.enrolled.sha : "";
  // asking for the scores records whether both photos were open (their verified hashes)
  const reveal = document.getElementById("reveal");
  if (reveal) {
    const url = new URL(reveal.href);
    url.search = ok ? `?probe=${state.probe.sha}&enrolled=${state.enrolled.sha}` : "";
    reveal.href = url.toString();
  }
  const why = document.getElementById("why-disabled");
  if (why) {
    why.textContent = ok
      ? "Both photos match the ledger: their SHA-256 go with your decision."
      : "The answers (same person, not the same person, inconclusive) are offered once both photos are open and their hashes match the ledger (" +
        (state.probe ? "probe ✓" : "probe not yet") + ", " + (state.enrolled ? "enrolled ✓" : "enrolled not yet") + ").";
  }
}

async function check(section, file) {
  const status = section.querySelector(".check");
  const expected = (section.dataset.expected || "").toLowerCase();
  const which = section.dataset.which;
  const figure = document.querySelector(`.compare figure[data-which="${which}"]`);
  state[which] = null;
  updateForm();
  redraw();
  section.classList.remove("good", "refused");
  figure.classList.remove("good");
  figure.querySelector(".facts-line").textContent = "not opened yet";
  if (!window.crypto || !window.crypto.subtle) {
    status.textContent = "This browser cannot hash files here (the console needs HTTPS or localhost).";
    section.classList.add("refused");
    return;
  }
  const bytes = await file.arrayBuffer();
  const actual = hex(await crypto.subtle.digest("SHA-256", bytes));
  if (!expected) {
    status.textContent = "Refused: the ledger recorded no SHA-256 for this photo, so no file can be checked against it.";
    section.classList.add("refused");
    return;
  }
  if (actual !== expected) {
    status.textContent = `Refused: “${file.name}” has SHA-256 ${actual.slice(0, 12)}…; the expected file is ` +
      `${section.dataset.label}, whose SHA-256 starts ${expected.slice(0, 12)}. Open that file instead.`;
    section.classList.add("refused");
    return;
  }
  let geometry = {};
  try { geometry = JSON.parse(section.dataset.geometry || "{}"); } catch (e) { geometry = {}; }
  let bitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes], { type: file.type || "image/jpeg" }));
  } catch (e) {
    status.textContent = "The hash matches, but this browser cannot decode the image.";
    section.classList.add("refused");
    return;
  }
  state[which] = { bitmap, geometry, sha: actual };
  status.textContent = `SHA-256 matches the ledger (${actual.slice(0, 12)}…).`;
  section.classList.add("good");
  figure.classList.add("good");
  describe(which === "probe" ? "Probe" : "Enrolled", state[which], figure);
  redraw();
  updateForm();
}

// The reason is plain text: the characters the service refuses (controls, bidirectional and
// invisible formatting) are named here before the form is sent.
const REFUSED = /[\p{Cc}\p{Cf}\p{Cs}\p{Cn}\p{Zl}\p{Zp}]/u;
// (a decision's reason and a conflict resolution's: the service checks both alike)
for (const reason of document.querySelectorAll("#reason, #resolve-reason")) {
  reason.addEventListener("input", () => {
    const found = [...reason.value].find((ch) => ch !== "\n" && ch !== "\r" && ch !== "\t" &&
      ch !== "\u200c" && ch !== "\u200d" && REFUSED.test(ch));
    reason.setCustomValidity(found ? `The reason contains U+${found.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}, ` +
      "a control, bidirectional or invisible formatting character: remove it." : "");
  });
}

for (const section of document.querySelectorAll("section.face")) {
  const input = section.querySelector('input[type="file"]');
  input.addEventListener("change", () => {
    if (input.files && input.files[0]) check(section, input.files[0]);
  });
}
const viewer = document.getElementById("viewer");
if (viewer) viewer.hidden = false;  // without this script the viewer could show nothing
const zoom = document.getElementById("zoom");
if (zoom) {
  zoom.addEventListener("input", () => {
    view.zoom = Number(zoom.value);
    document.getElementById("zoom-out").textContent = `${view.zoom}×`;
    redraw();
  });
  document.getElementById("original").addEventListener("change", (e) => { view.original = e.target.checked; redraw(); });
  document.getElementById("overlay").addEventListener("change", (e) => { view.overlay = e.target.checked; redraw(); });
}
window.addEventListener("resize", redraw);
redraw();
updateForm();
