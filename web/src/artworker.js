// The deep-art effect's inference, in a worker of its own (art.js): a WASM run blocks the thread it
// runs on, and on the page's thread it would hold back the camera's next frame and the cloud's
// answers until it ends. Here the page keeps drawing frames while a frame is painted.
//
// Messages, one at a time in order: {id, type: "open", model: ArrayBuffer, threads} → {id, threads};
// {id, type: "warm", width, height} → {id}; {id, type: "paint", width, height, rgba: ArrayBuffer} →
// {id, rgba: ArrayBuffer, timings}. A failure answers {id, error}.
import { SESSION_OPTIONS, ort, useThreads } from "./ort.js";

const OUTPUT = "image";
let session = null;
let queue = Promise.resolve();

async function run(rgb, width, height) {
  const input = new ort.Tensor("uint8", rgb, [1, height, width, 3]);
  const out = await session.run({ [session.inputNames[0]]: input });
  return out[OUTPUT].data;
}

async function paint({ width, height, rgba }) {
  const data = new Uint8ClampedArray(rgba);
  const n = width * height;
  if (data.length !== n * 4) throw new Error(`a ${width}×${height} frame has ${n * 4} bytes of RGBA, not ${data.length}`);
  const t0 = performance.now();
  const rgb = new Uint8Array(n * 3);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    rgb[3 * i] = data[j];
    rgb[3 * i + 1] = data[j + 1];
    rgb[3 * i + 2] = data[j + 2];
  }
  const t1 = performance.now();
  const pixels = await run(rgb, width, height);
  const t2 = performance.now();
  // Written back into the frame's own buffer. A Uint8ClampedArray clamps to 0..255 and rounds half to
  // even, as the server's np.rint(np.clip(...)).
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    data[j] = pixels[3 * i];
    data[j + 1] = pixels[3 * i + 1];
    data[j + 2] = pixels[3 * i + 2];
    data[j + 3] = 255;
  }
  const t3 = performance.now();
  return { answer: { rgba: data.buffer, timings: { pack_ms: t1 - t0, inference_ms: t2 - t1, unpack_ms: t3 - t2 } }, transfer: [data.buffer] };
}

async function handle(msg) {
  if (msg.type === "open") {
    if (session) throw new Error("this worker has a model open already");
    const threads = useThreads(msg.threads); // one model per worker: its WASM starts here, with these threads
    session = await ort.InferenceSession.create(new Uint8Array(msg.model), SESSION_OPTIONS);
    if (!session.outputNames.includes(OUTPUT)) throw new Error(`the model gives no '${OUTPUT}' output (it gives ${session.outputNames.join(", ")})`);
    return { answer: { threads }, transfer: [] };
  }
  if (!session) throw new Error("no model is open in the worker");
  if (msg.type === "warm") {
    await run(new Uint8Array(msg.width * msg.height * 3), msg.width, msg.height);
    return { answer: {}, transfer: [] };
  }
  if (msg.type === "paint") return paint(msg);
  throw new Error(`unknown message ${msg.type}`);
}

self.onmessage = ({ data: msg }) => {
  // One after another: ONNX Runtime runs one call of a session at a time.
  queue = queue.then(async () => {
    try {
      const { answer, transfer } = await handle(msg);
      self.postMessage({ id: msg.id, ...answer }, transfer);
    } catch (e) {
      self.postMessage({ id: msg.id, error: e?.message || String(e) });
    }
  });
};
