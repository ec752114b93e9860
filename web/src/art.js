// A deep-art effect on this device: the OTA-delivered image-to-image bundle (docs/deepart.md) run by
// onnxruntime-web on camera frames. The graph takes uint8 NHWC pixels of any height and width and
// returns float32 pixels 0..255 of the same size ("image"), as the server's deepart app runs it.
import { SESSION_OPTIONS, THREADS, ort } from "./ort.js";

const OUTPUT = "image";

export class ArtModel {
  /** ``delivered``: ModelUpdater.getModel()'s answer for a deep-art model. */
  static async open(delivered, name) {
    const { manifest, files } = delivered;
    const art = manifest.apps?.deepart;
    if (!art) {
      throw new Error(`${name} v${delivered.version} is not a deep-art effect (its manifest has no apps.deepart): export a run trained with tandem train --task stylize`);
    }
    if (!(manifest.outputs || []).some((t) => t.name === OUTPUT)) throw new Error(`${name} v${delivered.version} gives no '${OUTPUT}' output`);
    const modelFile = delivered.precision === "int8" && files["model.int8.onnx"] ? "model.int8.onnx" : "model.onnx";
    if (!files[modelFile]) throw new Error(`the delivered bundle has no ${modelFile}`);
    const session = await ort.InferenceSession.create(files[modelFile], SESSION_OPTIONS);
    return new ArtModel(session, delivered, name, art);
  }

  constructor(session, delivered, name, art) {
    this.session = session;
    this.name = name;
    this.version = delivered.version;
    this.source = delivered.source;
    this.effect = art.effect || name;
    this.teacher = art.teacher || art.style || "";
    this.threads = THREADS;
    this.warmed = new Set();
  }

  /**
   * One run at a size first, as the server warms a version up: a WASM session's first run at a new
   * size allocates and plans, and would show as a slow frame.
   */
  async warm(width, height) {
    const key = `${width}x${height}`;
    if (this.warmed.has(key)) return;
    await this.run(new Uint8Array(width * height * 3), width, height);
    this.warmed.add(key);
  }

  async run(rgb, width, height) {
    const input = new ort.Tensor("uint8", rgb, [1, height, width, 3]);
    const out = await this.session.run({ [this.session.inputNames[0]]: input });
    return out[OUTPUT].data;
  }

  /**
   * A frame's RGBA pixels (ImageData) painted: a new ImageData of the same size, and the time
   * each step took (pack: RGBA to RGB; inference; unpack: the float pixels to RGBA, rounded and
   * clamped as the server rounds them).
   */
  async paint(frame) {
    const { width, height, data } = frame;
    const t0 = performance.now();
    const n = width * height;
    const rgb = new Uint8Array(n * 3);
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      rgb[3 * i] = data[j];
      rgb[3 * i + 1] = data[j + 1];
      rgb[3 * i + 2] = data[j + 2];
    }
    const t1 = performance.now();
    const pixels = await this.run(rgb, width, height);
    const t2 = performance.now();
    const out = new ImageData(width, height);
    const o = out.data; // a Uint8ClampedArray: clamps to 0..255 and rounds half to even, as np.rint
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      o[j] = pixels[3 * i];
      o[j + 1] = pixels[3 * i + 1];
      o[j + 2] = pixels[3 * i + 2];
      o[j + 3] = 255;
    }
    const t3 = performance.now();
    return { image: out, timings: { pack_ms: t1 - t0, inference_ms: t2 - t1, unpack_ms: t3 - t2 } };
  }
}
