// A deep-art effect on this device: the OTA-delivered image-to-image bundle (docs/deepart.md) run by
// onnxruntime-web on camera frames, in a worker (artworker.js) so that the page's thread keeps taking
// frames meanwhile. The graph takes uint8 NHWC pixels of any height and width and returns float32
// pixels 0..255 of the same size ("image"), as the server's deepart app runs it.

export class ArtModel {
  /**
   * ``delivered``: ModelUpdater.getModel()'s answer for the deep-art model ``name``; ``threads``: WASM
   * threads to run it on (at most what the page can have, ort.js).
   */
  static async open(delivered, name, threads) {
    const { manifest, files } = delivered;
    const art = manifest.apps?.deepart;
    if (!art) {
      throw new Error(`${name} v${delivered.version} is not a deep-art effect (its manifest has no apps.deepart): export a run trained with tandem train --task stylize`);
    }
    const modelFile = delivered.precision === "int8" && files["model.int8.onnx"] ? "model.int8.onnx" : "model.onnx";
    if (!files[modelFile]) throw new Error(`the delivered bundle has no ${modelFile}`);
    const worker = new Worker(new URL("./artworker.js", import.meta.url), { type: "module", name: `deepart ${name}` });
    const model = new ArtModel(worker, delivered, name, art);
    // A neural style's bundle carries its style picture (apps.deepart.style_picture) for the picker to show.
    const picture = art.style_picture;
    if (typeof picture === "string" && files[picture]) model.stylePicture = new Blob([files[picture]], { type: "image/png" });
    try {
      const bytes = files[modelFile].slice().buffer; // a copy the worker takes over
      model.threads = (await model._call({ type: "open", model: bytes, threads }, [bytes])).threads;
    } catch (e) {
      model.close();
      throw e;
    }
    return model;
  }

  constructor(worker, delivered, name, art) {
    this.worker = worker;
    this.name = name;
    this.version = delivered.version;
    this.source = delivered.source;
    this.effect = art.effect || name;
    this.threads = null;
    this.stylePicture = null;
    this.warmed = new Set();
    this.pending = new Map();
    this.nextId = 1;
    worker.onmessage = ({ data }) => {
      const p = this.pending.get(data.id);
      if (!p) return;
      this.pending.delete(data.id);
      if (data.error) p.reject(new Error(data.error));
      else p.resolve(data);
    };
    worker.onerror = (e) => this._failAll(`the effect's worker failed: ${e.message || "it could not start"}`);
  }

  _call(msg, transfer = []) {
    if (!this.worker) return Promise.reject(new Error(`effect ${this.name} was closed`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  _failAll(why) {
    for (const p of this.pending.values()) p.reject(new Error(why));
    this.pending.clear();
  }

  /**
   * One run at a size first, as the server warms a version up: a WASM session's first run at a new
   * size allocates and plans, and would show as a slow frame.
   */
  async warm(width, height) {
    const key = `${width}x${height}`;
    if (this.warmed.has(key)) return;
    await this._call({ type: "warm", width, height });
    this.warmed.add(key);
  }

  /**
   * A frame's RGBA pixels (an ImageData, handed over: its buffer moves to the worker) painted: a new
   * ImageData of the same size, and the time each step took in the worker (pack: RGBA to RGB;
   * inference; unpack: the float pixels back to RGBA, rounded and clamped as the server does).
   */
  async paint(frame) {
    const { width, height } = frame;
    const buffer = frame.data.buffer;
    const r = await this._call({ type: "paint", width, height, rgba: buffer }, [buffer]);
    return { image: new ImageData(new Uint8ClampedArray(r.rgba), width, height), timings: r.timings };
  }

  close() {
    this._failAll(`effect ${this.name} was closed`);
    this.worker?.terminate();
    this.worker = null;
  }
}
