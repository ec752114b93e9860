// celebmatch on this device: the OTA-delivered bundle run by onnxruntime-web (WASM; its threads: ort.js).
import { alignedCrop, cropBounds, landmarkInput, pointsInImage } from "./align.js";
import { CelebMatch } from "./celebmatch.js";
import { cropWindow, findFaces, loadFinder } from "./face.js";
import { noFace } from "./messages.js";
import { readNpz } from "./npz.js";
import { SESSION_OPTIONS, ort } from "./ort.js";
import { cropPixels, decodeImage, toInput } from "./preprocess.js";

export class NoFace extends Error {}

// As src/tandem/apps/celebmatch/kit.py: below this, the landmark network sees no face in the box.
const MIN_FACE_PROBABILITY = 0.5;

export class DeviceModel {
  static async open(delivered) {
    const { manifest, files } = delivered;
    const modelFile = delivered.precision === "int8" && files["model.int8.onnx"] ? "model.int8.onnx" : "model.onnx";
    if (!files[modelFile]) throw new Error(`the delivered bundle has no ${modelFile}`);
    const galleryFile = manifest.apps?.celebmatch?.gallery;
    if (!galleryFile || !files[galleryFile]) throw new Error("the delivered bundle has no celebmatch gallery; enrol one and release again");
    const finder = loadFinder(); // OpenCV compiles meanwhile, so the first match does not wait for it
    const options = SESSION_OPTIONS;
    const session = await ort.InferenceSession.create(files[modelFile], options);
    const app = new CelebMatch(manifest, await readNpz(files[galleryFile]));
    // Face-embedding bundles bring their landmark network: the photo is aligned as on the server.
    let landmarks = null;
    const lmFile = manifest.apps?.faces?.landmarks;
    if (lmFile) {
      if (!files[lmFile]) throw new Error(`the delivered bundle has no ${lmFile} (its landmark network)`);
      landmarks = await ort.InferenceSession.create(files[lmFile], options);
    }
    const model = new DeviceModel(session, app, delivered, landmarks);
    // One run first, as the server warms a version up before it serves: the first run of a WASM
    // session allocates and plans, and would show as a slow inference stage.
    const { height, width } = model.spec;
    await model.run(new Uint8Array(app.views.length * height * width * 3), app.views.length);
    await finder.catch(() => {}); // a finder that cannot load shows up as the detect stage's error
    return model;
  }

  constructor(session, app, delivered, landmarks = null) {
    this.session = session;
    this.landmarks = landmarks;
    this.app = app;
    this.version = delivered.version;
    this.source = delivered.source;
    this.spec = delivered.manifest.preprocessing;
  }

  async run(batch, n) {
    const { height, width } = this.spec;
    const input = new ort.Tensor("uint8", batch, [n, height, width, 3]);
    const out = await this.session.run({ [this.session.inputNames[0]]: input });
    return out.embedding.data;
  }

  /** Five landmarks and the face probability for the face in box [x0, y0, x1, y1]. */
  async findLandmarks(image, box) {
    const { pixels, square } = landmarkInput(image, box);
    const input = new ort.Tensor("uint8", pixels, [1, 48, 48, 3]);
    const out = await this.landmarks.run({ pixels: input });
    return { points: pointsInImage(out.landmarks.data, square), probability: out.face_probability.data[0] };
  }

  /** The model input for a face box: aligned (face-embedding bundles) or the fixed crop. */
  async faceInput(image, box) {
    const faces = this.app.faces;
    if (!this.landmarks) return { pixels: toInput(image, this.spec, box), window: box, landmarks: null };
    const { points, probability } = await this.findLandmarks(image, box);
    if (!(probability >= MIN_FACE_PROBABILITY)) {
      throw new NoFace(noFace({ detail: `face probability ${probability.toFixed(2)} where the face should be` }));
    }
    const spec = { height: faces.align.height, width: faces.align.width, template: faces.align.template };
    const { pixels, m } = alignedCrop(image, points, spec);
    return { pixels, window: cropBounds(m, spec), landmarks: points };
  }

  /** The whole match, with the time each stage took. */
  async match(photo, { detect = true } = {}) {
    const t = { start: performance.now() };
    const image = await decodeImage(photo);
    t.decode = performance.now();
    let faceBox = null;
    let window;
    if (detect) {
      const faces = await findFaces(image);
      if (!faces.length) {
        throw new NoFace(noFace({ finder: true }));
      }
      const f = faces[0];
      faceBox = [f.x, f.y, f.x + f.w, f.y + f.h];
      window = this.landmarks ? faceBox : cropWindow(f);
    } else {
      window = cropPixels(this.spec, image.width, image.height);
    }
    t.detect = performance.now();
    const input = await this.faceInput(image, window);
    const batch = this.app.viewBatch(input.pixels);
    t.preprocess = performance.now();
    const embeddings = await this.run(batch, this.app.views.length);
    t.inference = performance.now();
    const result = this.app.score(embeddings, faceBox, input.window, 3, input.landmarks);
    t.score = performance.now();
    return {
      result,
      version: this.version,
      timings: {
        decode_ms: t.decode - t.start,
        detect_ms: t.detect - t.decode,
        preprocess_ms: t.preprocess - t.detect,
        inference_ms: t.inference - t.preprocess,
        score_ms: t.score - t.inference,
        total_ms: t.score - t.start,
      },
    };
  }
}
