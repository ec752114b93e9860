// The page: a photo in, celebmatch's answer out, from the device, the cloud, or whichever Auto picks;
// and, on its "deep art" tab (deepart.js), the webcam painted live on the device and by the cloud.
import "./style.css";
import { LatencyRule } from "./auto.js";
import { matchInCloud } from "./cloud.js";
import { DeepArtView } from "./deepart.js";
import { DeviceModel } from "./device.js";
import { ModelUpdater, Offline } from "./ota.js";
import { alignedCrop, landmarkInput } from "./align.js";
import { findFaces } from "./face.js";
import { el, fill } from "./dom.js";
import { decodeImage, toInput } from "./preprocess.js";

const $ = (id) => document.getElementById(id);
const SETTINGS = ["model", "alias", "channel", "device-key", "predict-key", "effects"];
const FRAGMENT_KEYS = { device: "device-key", predict: "predict-key", model: "model", alias: "alias", channel: "channel", effects: "effects" };
const LABELS = {
  "device-key": "Device key",
  "predict-key": "Predict key",
  model: "Model",
  alias: "Alias or version (cloud)",
  channel: "OTA channel (device)",
  effects: "Deep-art effects",
};
const SIDES = { device: "On device", cloud: "Cloud" };
const VIEWS = { celebmatch: "Tandem · celebmatch", deepart: "Tandem · deep art" };

const state = { photo: null, device: null, deviceLoading: null, rule: new LatencyRule(), view: "celebmatch", art: null };

function loadSettings() {
  for (const id of SETTINGS) {
    const saved = localStorage.getItem(`tandem.${id}`);
    if (saved !== null) $(id).value = saved;
  }
  saveSettings();
  for (const id of SETTINGS) $(id).addEventListener("change", () => {
    saveSettings();
    resetDevice();
    state.art.reset();
  });
  offerLinkSettings();
}

function resetDevice() {
  state.device = null;
  state.deviceLoading = null;
}

/**
 * Settings in the link's fragment (#device=…&predict=…&model=…) are only an offer: anyone can send
 * a link, so nothing from it is used or stored until the user says so on the page. The fragment
 * leaves the address bar at once either way, and keys are shown masked.
 */
function offerLinkSettings() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  const offered = Object.entries(FRAGMENT_KEYS).filter(([k]) => params.has(k)).map(([k, id]) => [id, params.get(k).trim()]);
  if (!offered.length) return;
  const panel = $("link-settings");
  fill(
    $("link-settings-list"),
    offered.map(([id, value]) => [el("dt", {}, LABELS[id]), el("dd", { data: { setting: id } }, id.endsWith("-key") ? maskKey(value) : value || "(empty)")]),
  );
  const close = () => {
    panel.hidden = true;
    fill($("link-settings-list"));
  };
  $("link-accept").addEventListener("click", () => {
    for (const [id, value] of offered) $(id).value = value;
    saveSettings();
    resetDevice();
    state.art.reset();
    close();
    warmUp();
  }, { once: true });
  $("link-ignore").addEventListener("click", close, { once: true });
  panel.hidden = false;
}

/** "tdm_0123456789ab_…" shows which key it is (the key id is public) and none of its secret. */
function maskKey(value) {
  const m = /^tdm_([0-9a-f]{12})_/.exec(value);
  if (m) return `key tdm_${m[1]}_… (secret hidden)`;
  return value ? `•••• (hidden, ${value.length} characters)` : "(empty)";
}

function saveSettings() {
  for (const id of SETTINGS) localStorage.setItem(`tandem.${id}`, $(id).value.trim());
}

const setting = (id) => $(id).value.trim();

function status(text) {
  $("model-status").textContent = text;
}

function updater() {
  return updaterFor(setting("model"), ({ file, done, total }) => status(`downloading ${file}: ${Math.round((100 * done) / (total || 1))}%`));
}

/** The page's OTA client for ``model`` (celebmatch's or a deep-art effect's): one device, one channel. */
function updaterFor(model, onProgress) {
  return new ModelUpdater({ deviceKey: setting("device-key"), model, channel: setting("channel") || "production", onProgress });
}

/**
 * Shows one of the page's views (celebmatch, deep art) and says which in the address (?view=), so a
 * reload or a link opens the same one. The view shown starts loading its model.
 */
function showView(name) {
  const view = VIEWS[name] ? name : "celebmatch";
  state.view = view;
  for (const node of document.querySelectorAll("[data-view-of]")) node.hidden = node.dataset.viewOf !== view;
  for (const tab of document.querySelectorAll("nav.tabs a")) {
    if (tab.dataset.view === view) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  document.title = VIEWS[view];
  const query = view === "celebmatch" ? "" : `?view=${view}`;
  if (location.search !== query) history.replaceState(null, "", location.pathname + query);
  if (view !== "deepart") state.art.deactivate();
  warmUp();
}

/** The shown view's model starts loading once there is a device key, so the first run does not wait for it. */
function warmUp() {
  if (state.view === "deepart") state.art.activate();
  else if (setting("device-key")) deviceModel().catch(() => {});
}

/** The on-device model: the latest over the air when the server answers, else the cached one. */
function deviceModel() {
  if (state.device) return Promise.resolve(state.device);
  if (!state.deviceLoading) {
    state.deviceLoading = (async () => {
      if (!setting("device-key")) throw new Error("no device key: open 'Server and keys' and paste one (tandem keys create --scope device)");
      status("checking for the model…");
      const ota = updater();
      const delivered = await ota.getModel();
      const model = await DeviceModel.open(delivered);
      state.device = model;
      const where = delivered.source === "network" ? "downloaded just now" : "from this browser's cache";
      status(`model: ${setting("model")} v${model.version} (${where}${delivered.offline ? `; offline: ${delivered.offline}` : ""}) — works offline${freshness(await ota.answerAgeS(), delivered.unsigned)}`);
      return model;
    })();
    state.deviceLoading.catch((e) => {
      state.deviceLoading = null;
      status(`model: not available on this device (${e.message})`);
    });
  }
  return state.deviceLoading;
}

async function runDevice() {
  const model = await deviceModel();
  const r = await model.match(state.photo, { detect: $("detect").checked });
  return { ...r, where: "device" };
}

async function runCloud() {
  if (!setting("predict-key")) throw new Error("no predict key: open 'Server and keys' and paste one (tandem keys create --scope predict)");
  const r = await matchInCloud({
    predictKey: setting("predict-key"),
    model: setting("model"),
    alias: setting("alias"),
    photo: state.photo,
    detect: $("detect").checked,
  });
  return { ...r, where: "cloud" };
}

/**
 * How stale the server's word is: the age of the last answer it signed for this browser. An attacker
 * who blocks the server, or answers "nothing new" in its name (unsigned), cannot make it younger.
 */
function freshness(ageS, unsigned = false) {
  if (ageS === null) return " · no signed answer from the server yet";
  const age = ageS < 90 ? `${Math.round(ageS)} s` : ageS < 5400 ? `${Math.round(ageS / 60)} min` : `${Math.round(ageS / 3600)} h`;
  return ` · server's last signed answer: ${age} ago${unsigned ? " (an unsigned answer since, not trusted)" : ""}`;
}

const RUN = { device: runDevice, cloud: runCloud };

async function runAuto() {
  const available = [];
  if (state.device || (await updater().installed())) available.push("device");
  if (setting("predict-key") && navigator.onLine) available.push("cloud");
  if (!available.length) available.push("device"); // nothing cached yet: the device path downloads it
  const first = state.rule.choose(available);
  const order = [first, ...available.filter((w) => w !== first)];
  let lastError;
  for (const where of order) {
    const t0 = performance.now();
    try {
      const r = await RUN[where]();
      state.rule.observe(where, performance.now() - t0, true);
      return { ...r, auto: where === first ? `Auto chose ${where}` : `Auto fell back to ${where} (${lastError.message})` };
    } catch (e) {
      state.rule.observe(where, performance.now() - t0, false);
      clearResult(where);
      lastError = e;
    }
  }
  throw lastError;
}

/** The side's card as before any answer: an answer shown is always one for the photo shown. */
function clearResult(where) {
  const card = $(`result-${where}`);
  fill(card, el("h2", {}, SIDES[where]), el("p", { class: "empty" }, "No answer yet."));
  delete card.dataset.result;
}

function render(r) {
  const where = [`ran on the ${r.where}`, r.version ? `, ${setting("model")} v${r.version}` : "", r.auto ? ` · ${r.auto}` : ""].join("");
  fill(
    $(`result-${r.where}`),
    el("h2", {}, SIDES[r.where]),
    el("p", { class: "sentence", data: { testid: "sentence" } }, r.result.sentence),
    el("p", { class: "where", data: { testid: "where" } }, where),
    el("ol", { class: "top" }, r.result.top.map((t) => el("li", {}, `${t.name} `, el("span", { class: "pct" }, `${t.percent}%`)))),
    el(
      "table",
      { class: "timings", data: { testid: "timings" } },
      Object.entries(r.timings).map(([k, v]) =>
        el("tr", {}, el("td", {}, k.replace(/_ms$/, "").replaceAll("_", " ")), el("td", { class: "ms" }, `${Number(v).toFixed(1)} ms`)),
      ),
    ),
  );
  $(`result-${r.where}`).dataset.result = JSON.stringify({ result: r.result, version: r.version, where: r.where, timings: r.timings });
}

async function run(modes) {
  $("error").textContent = "";
  for (const b of ["match", "both"]) $(b).disabled = true;
  document.body.dataset.busy = "1";
  try {
    for (const mode of modes) {
      try {
        render(await (mode === "auto" ? runAuto() : RUN[mode]()));
      } catch (e) {
        if (mode !== "auto") clearResult(mode); // Auto cleared each side it tried
        $("error").textContent = `${SIDES[mode] || "Auto"}: ${e.message}`;
        if (e instanceof Offline) status(`model: offline (${e.message})`);
      }
    }
  } finally {
    for (const b of ["match", "both"]) $(b).disabled = !state.photo;
    delete document.body.dataset.busy;
  }
}

function usePhoto(blob) {
  state.photo = blob;
  // A new photo: the answers and the error shown were about the last one.
  for (const where of Object.keys(SIDES)) clearResult(where);
  $("error").textContent = "";
  const img = $("preview");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.hidden = false;
  for (const b of ["match", "both"]) $(b).disabled = false;
}

async function startCamera() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" } });
    $("video").srcObject = stream;
    $("video").hidden = false;
    $("snap").hidden = false;
  } catch (e) {
    $("error").textContent = `webcam: ${e.message}`;
  }
}

function snap() {
  const v = $("video");
  const c = document.createElement("canvas");
  c.width = v.videoWidth;
  c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  c.toBlob((b) => b && usePhoto(b), "image/png"); // PNG: the same pixels reach either side
  v.srcObject.getTracks().forEach((t) => t.stop());
  v.hidden = true;
  $("snap").hidden = true;
}

function wire() {
  state.art = new DeepArtView({ setting, updaterFor, freshness });
  loadSettings();
  for (const tab of document.querySelectorAll("nav.tabs a")) {
    tab.addEventListener("click", (e) => {
      e.preventDefault();
      showView(tab.dataset.view);
    });
  }
  $("file").addEventListener("change", (e) => e.target.files[0] && usePhoto(e.target.files[0]));
  $("camera").addEventListener("click", startCamera);
  $("snap").addEventListener("click", snap);
  $("match").addEventListener("click", () => run([document.querySelector("input[name=mode]:checked").value]));
  $("both").addEventListener("click", () => run(["device", "cloud"]));
  $("forget").addEventListener("click", async () => {
    await updater().forget();
    resetDevice();
    status("model: cache cleared");
  });
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js").catch(() => {});
  showView(new URLSearchParams(location.search).get("view"));
}

// For tests and the curious: the page's preprocessing and model, callable from the console.
window.tandem = {
  async preprocess(bytes, spec, box = null) {
    return Array.from(toInput(await decodeImage(new Uint8Array(bytes)), spec, box));
  },
  async findFaces(bytes) {
    return findFaces(await decodeImage(new Uint8Array(bytes)));
  },
  // The alignment's pixel steps, for the parity tests: the landmark network's input for a box, and
  // the canonical crop for given landmarks (spec: {height, width, template}).
  async landmarkInput(bytes, box) {
    const { pixels, square } = landmarkInput(await decodeImage(new Uint8Array(bytes)), box);
    return { pixels: Array.from(pixels), square };
  },
  async align(bytes, points, spec) {
    return Array.from(alignedCrop(await decodeImage(new Uint8Array(bytes)), points, spec).pixels);
  },
  // The deep-art view's painting of RGB pixels (base64, height×width×3) by the chosen effect, as a
  // camera frame is painted: RGBA in, the painted RGBA's RGB out (base64).
  async paint(rgbB64, width, height) {
    const model = state.art.model;
    if (!model) throw new Error("no deep-art effect loaded");
    const rgb = Uint8Array.from(atob(rgbB64), (c) => c.charCodeAt(0));
    const frame = new ImageData(width, height);
    for (let i = 0; i < width * height; i++) frame.data.set([rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], 255], 4 * i);
    const { image } = await model.paint(frame);
    let out = "";
    for (let i = 0; i < width * height; i++) out += String.fromCharCode(image.data[4 * i], image.data[4 * i + 1], image.data[4 * i + 2]);
    return btoa(out);
  },
  deviceModel,
  updater,
  state,
  showView,
};

wire();
