// Review page: check each opened photo's SHA-256 against the hash the ledger recorded, and draw
// the face aligned (eyes level) with its recorded box and landmarks. The photo stays in this
// page: it is read from the file input, hashed with crypto.subtle and drawn on a canvas; it is
// never uploaded (the inputs are outside the decision form and have no name).
"use strict";

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

function landmark(geometry, type) {
  return (geometry.Landmarks || []).find((l) => l.Type === type);
}

function draw(canvas, bitmap, geometry) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const iw = bitmap.width, ih = bitmap.height;
  const box = geometry.BoundingBox;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#222";
  ctx.fillRect(0, 0, W, H);
  if (!box) {
    const s = Math.min(W / iw, H / ih);
    ctx.drawImage(bitmap, (W - iw * s) / 2, (H - ih * s) / 2, iw * s, ih * s);
    return "no face box was recorded: whole photo shown";
  }
  const bx = box.Left * iw, by = box.Top * ih, bw = box.Width * iw, bh = box.Height * ih;
  const le = landmark(geometry, "eyeLeft"), re = landmark(geometry, "eyeRight");
  let cx = bx + bw / 2, cy = by + bh / 2, angle = 0, scale = (0.6 * W) / Math.max(bw, bh);
  let how = "cropped to the recorded box (no landmarks recorded)";
  if (le && re) {
    const lx = le.X * iw, ly = le.Y * ih, rx = re.X * iw, ry = re.Y * ih;
    angle = Math.atan2(ry - ly, rx - lx);
    // eyes level, 30% of the width apart, a third from the top
    const eyes = Math.hypot(rx - lx, ry - ly);
    scale = (0.3 * W) / Math.max(eyes, 1);
    const mx = (lx + rx) / 2, my = (ly + ry) / 2;
    const dy = (0.5 - 0.38) * H / scale;  // move the eye midpoint above the centre
    cx = mx - Math.sin(angle) * dy;
    cy = my + Math.cos(angle) * dy;
    how = "aligned on the recorded landmarks (eyes level)";
  }
  ctx.translate(W / 2, H / 2);
  ctx.scale(scale, scale);
  ctx.rotate(-angle);
  ctx.translate(-cx, -cy);
  ctx.drawImage(bitmap, 0, 0);
  ctx.lineWidth = 2 / scale;
  ctx.strokeStyle = "#ffd400";
  ctx.strokeRect(bx, by, bw, bh);
  ctx.fillStyle = "#00e5ff";
  for (const l of geometry.Landmarks || []) {
    ctx.beginPath();
    ctx.arc(l.X * iw, l.Y * ih, 3 / scale, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  return how;
}

const verified = {};

function updateConfirm() {
  const confirm = document.querySelector('input[name="decision"][value="CONFIRM"]');
  if (!confirm) return;
  const ok = verified.probe && verified.enrolled;
  confirm.disabled = !ok;
  const label = confirm.closest("label");
  if (label) label.title = ok ? "" : "Open both photos (hashes checked) before confirming";
}

async function check(section, file) {
  const status = section.querySelector(".check");
  const canvas = section.querySelector("canvas");
  const expected = (section.dataset.expected || "").toLowerCase();
  const which = section.dataset.which;
  verified[which] = false;
  updateConfirm();
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  section.classList.remove("good", "refused");
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
    status.textContent = "Refused: this file's SHA-256 is " + actual +
      ", not the recorded " + expected + ". It is not the photo the ledger recorded.";
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
  const how = draw(canvas, bitmap, geometry);
  status.textContent = "SHA-256 matches the ledger (" + actual.slice(0, 16) + "…); face " + how + ".";
  section.classList.add("good");
  verified[which] = true;
  updateConfirm();
}

for (const section of document.querySelectorAll("section.face")) {
  const input = section.querySelector('input[type="file"]');
  input.addEventListener("change", () => {
    if (input.files && input.files[0]) check(section, input.files[0]);
  });
}
updateConfirm();
