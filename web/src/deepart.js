// The deep-art view: the webcam painted live on this device by an OTA-delivered effect (art.js), with
// a frame counter, and the same camera frames sent to the cloud for comparison: its measured frame
// rate and round trip, and both projected onto the advisor's network profiles (networks.js).
import { ArtModel } from "./art.js";
import { paintInCloud } from "./cloud.js";
import { el, fill } from "./dom.js";
import { FpsMeter } from "./fps.js";
import { PROFILES, project } from "./networks.js";
import { MAX_THREADS } from "./ort.js";

export const RESOLUTIONS = { "320x240": [320, 240], "640x480": [640, 480] };
const JPEG_QUALITY = 0.9; // the frames sent to the cloud (the server answers at 90 too)
const SHOW_EVERY_MS = 250;
const RETRY_AFTER_ERROR_MS = 1000;

/** Effect names from the settings' comma- or space-separated list, each once, in order. */
export function effectList(text) {
  return [...new Set(String(text || "").split(/[\s,]+/).filter(Boolean))];
}

/**
 * The camera's newest frame at the chosen size: each new video frame is drawn once (cropped to the
 * size's aspect, then scaled) into ``canvas``, and numbered; the device and cloud loops each wait for
 * a frame newer than the last they took.
 */
class FrameSource {
  constructor(video, canvas) {
    this.video = video;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.seq = 0;
    this.waiting = [];
    this.running = false;
    this.generation = 0; // a callback of an earlier start() finds another generation and ends
  }

  size(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
  }

  start() {
    if (this.running) return;
    this.running = true;
    const generation = ++this.generation;
    const onFrame = () => {
      if (!this.running || generation !== this.generation) return;
      this._draw();
      this._schedule(onFrame);
    };
    this._schedule(onFrame);
  }

  stop() {
    this.running = false;
    for (const w of this.waiting.splice(0)) w(null);
  }

  _schedule(fn) {
    // A callback per new video frame where the browser has one; else every animation frame.
    if (this.video.requestVideoFrameCallback) this.video.requestVideoFrameCallback(fn);
    else requestAnimationFrame(fn);
  }

  _draw() {
    const v = this.video;
    if (!v.videoWidth || !v.videoHeight) return;
    const { width, height } = this.canvas;
    // The largest window of the target's aspect, centred: a 16:9 camera is cropped, not stretched.
    const scale = Math.min(v.videoWidth / width, v.videoHeight / height);
    const sw = width * scale;
    const sh = height * scale;
    this.ctx.drawImage(v, (v.videoWidth - sw) / 2, (v.videoHeight - sh) / 2, sw, sh, 0, 0, width, height);
    this.seq += 1;
    for (const w of this.waiting.splice(0)) w(this.seq);
  }

  /** The number of a frame newer than ``after`` once there is one (null once stopped). */
  newer(after) {
    if (!this.running) return Promise.resolve(null);
    if (this.seq > after) return Promise.resolve(this.seq);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  pixels() {
    return this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
  }

  jpeg() {
    return new Promise((resolve, reject) =>
      this.canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the browser could not encode the frame as JPEG"))), "image/jpeg", JPEG_QUALITY),
    );
  }
}

export class DeepArtView {
  /**
   * ``setting(id)``: the page's settings; ``updaterFor(model, onProgress)``: a ModelUpdater for a
   * model (the page's OTA client, as celebmatch's); ``freshness(ageS, unsigned)``: the status line's
   * note on the server's last signed answer.
   */
  constructor({ setting, updaterFor, freshness }) {
    this.setting = setting;
    this.updaterFor = updaterFor;
    this.freshness = freshness;
    this.$ = (id) => document.getElementById(id);
    this.source = new FrameSource(this.$("art-video"), this.$("art-input"));
    this.models = new Map(); // "effect name/threads" -> Promise<ArtModel>
    this.model = null;
    this.stream = null;
    this.running = false;
    this.loops = { device: null, cloud: null };
    this.meters = { device: new FpsMeter(), cloud: new FpsMeter() };
    this.last = { device: null, cloud: null };
    this.totals = { device: 0, cloud: 0 };
    this.showTimer = null;
    this._wire();
  }

  _wire() {
    const $ = this.$;
    $("art-effect").addEventListener("change", () => this.choose($("art-effect").value));
    $("art-resolution").addEventListener("change", () => this.setResolution($("art-resolution").value));
    $("art-threads").addEventListener("change", () => this.choose($("art-effect").value));
    // Two threads need a cross-origin isolated page (ort.js); without it the picker offers one.
    fill($("art-threads"), Array.from({ length: MAX_THREADS }, (_, i) => el("option", { value: i + 1 }, String(i + 1))));
    $("art-threads").value = String(MAX_THREADS);
    $("art-start").addEventListener("click", () => (this.running ? this.stop() : this.start()));
    $("art-device").addEventListener("change", () => this._loops());
    $("art-cloud").addEventListener("change", () => this._loops());
  }

  get resolution() {
    return RESOLUTIONS[this.$("art-resolution").value] ? this.$("art-resolution").value : "320x240";
  }

  /** The picker, from the settings' effects; the current choice kept when it is still listed. */
  refresh() {
    const names = effectList(this.setting("effects"));
    const picker = this.$("art-effect");
    const chosen = picker.value;
    fill(picker, names.length ? names.map((n) => el("option", { value: n }, n)) : el("option", { value: "" }, "(none: list effects in “Server and keys”)"));
    picker.value = names.includes(chosen) ? chosen : names[0] || "";
    picker.disabled = !names.length;
    this.$("art-start").disabled = !names.length;
    if (!names.length) this.status("effect: none listed — name your deep-art models in “Server and keys” (Deep-art effects)");
  }

  /** The view is shown: the chosen effect starts loading (with a device key), so Start does not wait for it. */
  activate() {
    this.refresh();
    this.show();
    const name = this.$("art-effect").value;
    if (name && this.setting("device-key") && !this.model) this.choose(name);
  }

  /** The view is hidden: the camera stops. */
  deactivate() {
    if (this.running) this.stop();
  }

  /** Settings changed: models delivered with the old ones are dropped. */
  reset() {
    for (const loading of this.models.values()) loading.then((m) => m.close(), () => {});
    this.models.clear();
    this.model = null;
    this.refresh();
    if (this.running) this.choose(this.$("art-effect").value);
  }

  status(text) {
    this.$("art-status").textContent = text;
  }

  error(text) {
    this.$("art-error").textContent = text;
  }

  get threads() {
    return Number(this.$("art-threads").value) || MAX_THREADS;
  }

  /** The effect's model, delivered over the air exactly as celebmatch's (ota.js), opened once per thread count. */
  load(name) {
    if (!name) return Promise.reject(new Error("no effect chosen: list your deep-art models in “Server and keys”"));
    const threads = this.threads;
    const key = `${name}/${threads}`;
    if (!this.models.has(key)) {
      const loading = (async () => {
        if (!this.setting("device-key")) throw new Error("no device key: open 'Server and keys' and paste one (tandem keys create --scope device)");
        this.status(`effect ${name}: checking for the model…`);
        const ota = this.updaterFor(name, ({ file, done, total }) => this.status(`effect ${name}: downloading ${file}: ${Math.round((100 * done) / (total || 1))}%`));
        const delivered = await ota.getModel();
        const model = await ArtModel.open(delivered, name, threads);
        const [w, h] = RESOLUTIONS[this.resolution];
        await model.warm(w, h);
        const where = delivered.source === "network" ? "downloaded just now" : "from this browser's cache";
        const offline = delivered.offline ? `; offline: ${delivered.offline}` : "";
        model.statusLine = `effect: ${model.effect} (${name} v${model.version}, ${where}${offline}) — runs here on ${model.threads} WASM thread${model.threads > 1 ? "s" : ""}, works offline${this.freshness(await ota.answerAgeS(), delivered.unsigned)}`;
        return model;
      })();
      this.models.set(key, loading);
      loading.catch(() => this.models.delete(key));
    }
    return this.models.get(key);
  }

  async choose(name) {
    this.error("");
    try {
      const model = await this.load(name);
      if (this.$("art-effect").value !== name || model.threads !== this.threads) return; // another choice meanwhile
      this.model = model;
      this.meters.device.reset();
      this.status(model.statusLine);
      this._showStyle(model);
    } catch (e) {
      this.model = null;
      this._showStyle(null);
      this.status(`effect ${name}: not available on this device (${e.message})`);
      this.error(`On device: ${e.message}`);
    }
  }

  /** The effect's style picture beside the picker, where its bundle has one (a neural style's). */
  _showStyle(model) {
    const holder = this.$("art-style");
    const old = holder.querySelector("img");
    if (old) URL.revokeObjectURL(old.src);
    fill(holder, model?.stylePicture ? el("img", { src: URL.createObjectURL(model.stylePicture), alt: `${model.name}'s style picture` }) : null);
  }

  async setResolution(key) {
    const [w, h] = RESOLUTIONS[key];
    if (this.stream) {
      const [track] = this.stream.getVideoTracks();
      await track.applyConstraints({ width: { ideal: w }, height: { ideal: h } }).catch(() => {}); // the drawing scales anyway
    }
    if (this.model) await this.model.warm(w, h);
    this.source.size(w, h);
    if (this.running) this.source.start();
    for (const canvas of ["art-device-out", "art-cloud-out"]) Object.assign(this.$(canvas), { width: w, height: h });
    this.meters.device.reset();
    this.meters.cloud.reset();
  }

  async start() {
    this.error("");
    const [w, h] = RESOLUTIONS[this.resolution];
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: w }, height: { ideal: h }, frameRate: { ideal: 30 }, facingMode: "user" },
      });
    } catch (e) {
      this.error(`webcam: ${e.message}`);
      return;
    }
    const video = this.$("art-video");
    video.srcObject = this.stream;
    await video.play().catch(() => {});
    this.running = true;
    this.$("art-start").textContent = "Stop the webcam";
    document.body.dataset.artRunning = "1";
    await this.setResolution(this.resolution);
    this.showTimer = setInterval(() => this.show(), SHOW_EVERY_MS);
    await this.choose(this.$("art-effect").value);
    this._loops();
  }

  stop() {
    this.running = false;
    this.source.stop();
    for (const t of this.stream?.getTracks() || []) t.stop();
    this.stream = null;
    this.$("art-video").srcObject = null;
    this.$("art-start").textContent = "Start the webcam";
    clearInterval(this.showTimer);
    this.show();
    delete document.body.dataset.artRunning;
  }

  /** Each side's loop runs while the camera does and its box is ticked. */
  _loops() {
    for (const side of ["device", "cloud"]) {
      if (this.running && this.$(`art-${side}`).checked && !this.loops[side]) {
        this.meters[side].reset();
        this.loops[side] = (side === "device" ? this._deviceLoop() : this._cloudLoop()).finally(() => {
          this.loops[side] = null;
        });
      }
    }
  }

  _on(side) {
    return this.running && this.$(`art-${side}`).checked;
  }

  async _deviceLoop() {
    let seq = 0;
    const out = this.$("art-device-out").getContext("2d");
    while (this._on("device")) {
      seq = await this.source.newer(seq);
      if (seq === null || !this._on("device")) break;
      const model = this.model;
      if (!model) {
        await new Promise((r) => setTimeout(r, 100)); // the effect is loading (or failed: said already)
        continue;
      }
      const t0 = performance.now();
      const frame = this.source.pixels();
      let painted;
      try {
        painted = await model.paint(frame);
      } catch (e) {
        if (model !== this.model) continue; // its effect was closed meanwhile (new settings): the next one paints
        this.error(`On device: ${e.message}`);
        this.$("art-device").checked = false;
        break;
      }
      if (model !== this.model || painted.image.width !== this.source.canvas.width) continue; // changed meanwhile
      out.putImageData(painted.image, 0, 0);
      const ms = performance.now() - t0;
      this.meters.device.tick(ms);
      this.totals.device += 1;
      this.last.device = { ...painted.timings, frame_ms: ms, width: frame.width, height: frame.height };
    }
  }

  async _cloudLoop() {
    let seq = 0;
    const out = this.$("art-cloud-out").getContext("2d");
    while (this._on("cloud")) {
      seq = await this.source.newer(seq);
      if (seq === null || !this._on("cloud")) break;
      const name = this.$("art-effect").value;
      if (!this.setting("predict-key")) {
        this.error("Cloud: no predict key: open 'Server and keys' and paste one (tandem keys create --scope predict)");
        this.$("art-cloud").checked = false;
        break;
      }
      const t0 = performance.now();
      try {
        const frame = await this.source.jpeg();
        const size = [this.source.canvas.width, this.source.canvas.height];
        const t1 = performance.now();
        const r = await paintInCloud({ predictKey: this.setting("predict-key"), model: name, alias: this.setting("alias"), frame });
        const t2 = performance.now();
        const bitmap = await createImageBitmap(r.picture);
        out.drawImage(bitmap, 0, 0, out.canvas.width, out.canvas.height);
        bitmap.close();
        const t3 = performance.now();
        // The meter counts whole frames (encode, round trip, decode); the round trip is the network's part.
        this.meters.cloud.tick(t3 - t0);
        this.totals.cloud += 1;
        this.last.cloud = { ...r.timings, encode_ms: t1 - t0, decode_ms: t3 - t2, frame_ms: t3 - t0, up_bytes: r.upBytes,
          down_bytes: r.downBytes, version: r.version, width: size[0], height: size[1] };
        if (this.$("art-error").textContent.startsWith("Cloud:")) this.error("");
      } catch (e) {
        this.error(`Cloud: ${e.message}`);
        await new Promise((r) => setTimeout(r, RETRY_AFTER_ERROR_MS));
      }
    }
  }

  /** The figures as they stand: shown on the page, and kept as JSON in #art-stats's data-stats. */
  stats() {
    const device = this.meters.device.read();
    const cloud = this.meters.cloud.read();
    const c = this.last.cloud;
    // The last second's mean frame on this link, with the last frame's bytes, onto each profile's link.
    const projected = c && cloud.frames ? project(cloud.frame_ms, c.up_bytes, c.down_bytes) : null;
    return {
      effect: this.$("art-effect").value || null,
      version: this.model?.version ?? null,
      resolution: this.resolution,
      threads: this.model?.threads ?? null,
      running: this.running,
      device: { fps: device.fps, frame_ms: device.frame_ms, frames: this.totals.device, last: this.last.device },
      cloud: { fps: cloud.fps, frame_ms: cloud.frame_ms, frames: this.totals.cloud, last: c, projected },
    };
  }

  show() {
    const s = this.stats();
    const fps = (x) => (x.fps ? `${x.fps.toFixed(1)} fps` : "– fps");
    const ms = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(1)} ms`);
    fill(this.$("art-device-fps"), `${fps(s.device)} · ${ms(s.device.frame_ms)} a frame`);
    fill(this.$("art-cloud-fps"), `${fps(s.cloud)} · ${ms(s.cloud.frame_ms)} a frame`);
    const last = s.cloud.last;
    fill(
      this.$("art-cloud-detail"),
      last
        ? `last frame: ${(last.up_bytes / 1024).toFixed(1)} KB up, ${(last.down_bytes / 1024).toFixed(1)} KB down, round trip ${ms(last.round_trip_ms)}` +
            (last.server_inference_ms !== undefined ? ` (the server's inference ${ms(last.server_inference_ms)})` : "")
        : "",
    );
    const rows = s.cloud.projected
      ? Object.entries(s.cloud.projected).map(([name, p]) =>
          el("tr", { data: { profile: name } }, el("td", {}, name), el("td", { class: "ms" }, ms(p.frame_ms)), el("td", { class: "ms" }, `${p.fps.toFixed(1)} fps`)),
        )
      : el("tr", {}, el("td", { colspan: 3, class: "empty" }, `Tick “compare with the cloud”: each profile (${Object.keys(PROFILES).join(", ")}) then gets a projection.`));
    fill(this.$("art-projection-rows"), rows);
    this.$("art-stats").dataset.stats = JSON.stringify(s);
  }
}
