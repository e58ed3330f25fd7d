// comcloak serve's page: uses only the public API (/v1/info, POST /v1/jobs, GET /v1/jobs/ID[/result]).
// Each photo is submitted as a job, its status polled (queue position, running), then its cloak fetched and shown.
"use strict";

const POLL_MS = 500;
const AMPLIFY = 10; // the difference view: each level of change shown as 10
const EXTENSIONS = { "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/tiff": "tif",
                     "image/bmp": "bmp" };
const STAGES = { uploading: 1, queued: 2, running: 3, done: 4 };
let info = null;
let token = null;

const $ = (id) => document.getElementById(id);

function headers(extra) {
  const all = Object.assign({}, extra || {});
  if (token) all.Authorization = "Bearer " + token;
  return all;
}

// One readable line from a problem+json answer (or any failed answer).
async function problemLine(response) {
  try {
    const problem = await response.json();
    if (problem && problem.detail) return problem.detail;
  } catch (ignored) { /* not JSON: fall back to the status */ }
  return "the server answered " + response.status + " " + response.statusText;
}

function option(select, value, text, selected) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = text;
  item.selected = selected;
  select.appendChild(item);
}

function fillSettings() {
  const strength = $("strength");
  strength.replaceChildren();
  for (const name of Object.keys(info.presets)) option(strength, name, name, name === info.default_strength);
  const describe = () => { $("strength-help").textContent = info.presets[strength.value] || ""; };
  strength.addEventListener("change", describe);
  describe();
  const check = $("check");
  check.replaceChildren();
  option(check, "none", "none (the photo as downloaded)", info.check === "none");
  for (const [name, text] of Object.entries(info.profiles)) option(check, name, text, name === info.check);
  if (!(info.check in info.profiles) && info.check !== "none") option(check, info.check, info.check, true);
  const protect = $("protect");
  protect.querySelectorAll("label").forEach((label) => label.remove());
  const words = { faces: "faces (face recognition)", objects: "content (image labels)", both: "both" };
  for (const choice of info.protect) {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    Object.assign(radio, { type: "radio", name: "protect", value: choice, checked: choice === info.default_protect });
    radio.addEventListener("change", syncFacePreset);
    label.append(radio, " " + (words[choice] || choice));
    protect.appendChild(label);
  }
  const facePreset = $("face-preset");
  facePreset.replaceChildren();
  option(facePreset, "", "the server's default", true);
  for (const [name, text] of Object.entries(info.face_presets)) option(facePreset, name, name + ": " + text, false);
  const format = $("format");
  format.replaceChildren();
  for (const name of info.formats) option(format, name, name === "keep" ? "the same format as the photo" : name,
                                          name === "keep");
  syncFacePreset();
}

function chosenProtect() {
  const radio = document.querySelector('input[name="protect"]:checked');
  return radio ? radio.value : info.default_protect;
}

function syncFacePreset() {
  $("face-preset").disabled = chosenProtect() === "objects";
}

async function loadInfo() {
  const response = await fetch("/v1/info", { headers: headers() });
  if (response.status === 401) {
    $("token-row").hidden = false;
    $("server-status").textContent = "This server needs an access token: enter it below.";
    return;
  }
  if (!response.ok) {
    $("server-status").textContent = "The server's settings could not be read: " + await problemLine(response);
    return;
  }
  info = await response.json();
  $("token-row").hidden = true;
  fillSettings();
  $("server-status").textContent = "Ready: choose photos to cloak.";
}

function jobQuery() {
  const query = new URLSearchParams({ strength: $("strength").value, check: $("check").value,
                                      protect: chosenProtect(), format: $("format").value });
  if ($("face-preset").value && chosenProtect() !== "objects") query.set("face_preset", $("face-preset").value);
  return query;
}

function newCard(file) {
  const card = $("photo-card").content.firstElementChild.cloneNode(true);
  card.querySelector(".name").textContent = file.name;
  $("photos").appendChild(card);
  return card;
}

function setState(card, stage, text) {
  card.querySelector("progress").value = STAGES[stage] || 0;
  card.querySelector(".state").textContent = text;
}

function fail(card, line) {
  card.querySelector(".progress").hidden = true;
  const error = card.querySelector(".error");
  error.textContent = "Not cloaked: " + line;
  error.hidden = false;
  card.classList.add("failed");
}

async function cloakFile(file) {
  const card = newCard(file);
  if (!info) { fail(card, "the server's settings are not loaded yet"); return; }
  setState(card, "uploading", "Uploading…");
  try {
    const response = await fetch("/v1/jobs?" + jobQuery(), {
      method: "POST", body: file, headers: headers({ "Content-Type": file.type || "application/octet-stream" }) });
    if (response.status !== 202) { fail(card, await problemLine(response)); return; }
    await follow(card, file, await response.json());
  } catch (error) {
    // fetch rejects with a TypeError "Failed to fetch" (Chromium) / "NetworkError..." (Firefox) when the server
    // cannot be reached; anything else is this page's own failure
    const network = error instanceof TypeError && /fetch|network/i.test(error.message);
    fail(card, network ? "the server could not be reached (" + error.message + ")"
      : "the page failed to show the result (" + error.message + ")");
  }
}

async function follow(card, file, status) {
  for (;;) {
    if (status.status === "failed") { fail(card, status.problem.detail); return; }
    if (status.status === "done") break;
    if (status.status === "queued") {
      const ahead = status.position === 0 ? "next in the queue" : status.position + " ahead in the queue";
      setState(card, "queued", "Waiting: " + ahead + " (" + Math.round(status.seconds) + " s)");
    } else {
      setState(card, "running", "Cloaking… " + Math.round(status.seconds) + " s");
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const response = await fetch(status.url, { headers: headers() });
    if (!response.ok) { fail(card, await problemLine(response)); return; }
    status = await response.json();
  }
  const response = await fetch(status.result_url, { headers: headers() });
  if (!response.ok) { fail(card, await problemLine(response)); return; }
  await show(card, file, status.result, await response.blob(), status.seconds);
}

function loaded(img, url) {
  return new Promise((resolve) => {
    img.onload = () => resolve(true);
    img.onerror = () => resolve(false);
    img.src = url;
  });
}

async function show(card, file, result, blob, seconds) {
  const original = card.querySelector("img.original");
  const cloak = card.querySelector("img.cloak");
  const cloakUrl = URL.createObjectURL(blob);
  const [originalShown] = await Promise.all([loaded(original, URL.createObjectURL(file)), loaded(cloak, cloakUrl)]);
  if (!originalShown) original.alt = "This browser cannot show the original's format; the cloak is beside it.";
  const stem = file.name.replace(/\.[^.]+$/, "") || "photo";
  const download = card.querySelector("a.download");
  download.href = cloakUrl;
  download.download = stem + "-cloaked." + (EXTENSIONS[result.content_type] || "img");
  download.textContent = "Download " + download.download;
  const verdict = card.querySelector(".verdict");
  verdict.textContent = verdictLine(result);
  verdict.classList.add(result.protected ? "protected" : "unprotected");
  labelList(card.querySelector(".labels"), result, seconds);
  const toggle = card.querySelector("button.toggle");
  toggle.textContent = "Show the difference ×" + AMPLIFY;
  toggle.disabled = !originalShown;
  toggle.addEventListener("click", () => toggleDifference(card, original, cloak));
  card.querySelector(".progress").hidden = true;
  card.querySelector(".result").hidden = false;
  card.classList.add("done");
}

function platformWords(check) {
  if (check === "none") return "with no platform recompression";
  if (info.profiles[check]) return "after the " + check + " profile";
  return "after " + check;
}

function joinNames(names) {
  return names.length < 2 ? names.join("") : names.slice(0, -1).join(", ") + " and " + names[names.length - 1];
}

// The verdict in words, from the job's JSON alone (the same fields as POST /v1/cloak?response=json).
function verdictLine(result) {
  const parts = [];
  const after = platformWords(result.check);
  if (result.protected_on) {
    const names = Object.keys(result.protected_on);
    const fooled = names.filter((name) => result.protected_on[name]);
    const still = names.filter((name) => !result.protected_on[name]);
    parts.push(still.length === 0
      ? "Protected against " + joinNames(names) + " " + after + ", in the attacker's crop view"
      : "Not protected against " + joinNames(still) + (fooled.length ? " (fooled: " + joinNames(fooled) + ")" : "")
        + " " + after + ", in the attacker's crop view");
  }
  if (result.faces) {
    const protectedFaces = result.faces.filter((face) => face.verdict === "protected").length;
    parts.push(result.faces.length === 0 ? "no faces found"
      : "faces: " + protectedFaces + " of " + result.faces.length + " protected " + after
        + " (judged by the server's face recogniser)");
  }
  const psnr = result.psnr_db === null ? "" : "; PSNR " + result.psnr_db.toFixed(1) + " dB";
  return (result.protected ? "✔ " : "✘ ") + parts.join("; ") + psnr + ".";
}

function labelList(list, result, seconds) {
  const rows = [];
  const named = (label, name) => label + (name ? " (" + name + ")" : "");
  if (result.clean_label !== null && result.clean_label !== undefined) {
    rows.push(["Clean label", named(result.clean_label, result.clean_name)]);
    rows.push(["Cloaked label", named(result.cloak_label, result.cloak_name)]);
  }
  for (const [index, face] of (result.faces || []).entries()) {
    rows.push(["Face " + (index + 1), face.verdict + (face.cosine === null ? ""
      : " (cosine similarity to the original face " + face.cosine.toFixed(2) + ")")]);
  }
  rows.push(["Settings", result.protect + ", checked " + platformWords(result.check)]);
  rows.push(["Time", Math.round(seconds) + " s (cloaking " + result.seconds.toFixed(1) + " s)"]);
  for (const [term, value] of rows) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    list.append(dt, dd);
  }
}

// The amplified difference, computed here on a canvas: grey where nothing changed.
function toggleDifference(card, original, cloak) {
  const toggle = card.querySelector("button.toggle");
  const canvas = card.querySelector("canvas.difference");
  const showing = toggle.getAttribute("aria-pressed") === "true";
  if (!showing && !canvas.dataset.drawn) drawDifference(canvas, original, cloak);
  toggle.setAttribute("aria-pressed", String(!showing));
  canvas.hidden = showing;
  cloak.hidden = !showing;
  card.querySelector(".cloak-caption").textContent = showing ? "Cloaked"
    : "Difference ×" + AMPLIFY + " (grey: unchanged)";
}

function drawDifference(canvas, original, cloak) {
  const width = cloak.naturalWidth;
  const height = cloak.naturalHeight;
  const scratch = document.createElement("canvas");
  Object.assign(scratch, { width, height });
  const context = scratch.getContext("2d", { willReadFrequently: true });
  context.drawImage(original, 0, 0, width, height);
  const before = context.getImageData(0, 0, width, height).data;
  context.drawImage(cloak, 0, 0, width, height);
  const after = context.getImageData(0, 0, width, height);
  for (let i = 0; i < after.data.length; i += 4) {
    for (let c = 0; c < 3; c += 1) after.data[i + c] = 128 + AMPLIFY * (after.data[i + c] - before[i + c]);
  }
  Object.assign(canvas, { width, height });
  canvas.getContext("2d").putImageData(after, 0, 0);
  canvas.dataset.drawn = "true";
}

function cloakFiles(files) {
  for (const file of files) cloakFile(file);
}

function setUp() {
  const useToken = () => { token = $("token").value.trim(); loadInfo(); };
  $("settings").addEventListener("submit", (event) => { // Enter in a field: never posted anywhere
    event.preventDefault();
    if (!$("token-row").hidden) useToken();
  });
  $("files").addEventListener("change", (event) => { cloakFiles(Array.from(event.target.files)); event.target.value = ""; });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    cloakFiles(Array.from(event.dataTransfer.files));
  });
  $("token-use").addEventListener("click", useToken);
  loadInfo().catch((error) => { $("server-status").textContent = "The server could not be reached: " + error.message; });
}

setUp();
