// Finds the face in a photo with OpenCV's Haar cascade, as src/tandem/faces/finder.py does
// on the server (same cascade file, same parameters, same downscale), and turns it into the crop
// window the model was trained on.
import { pyRound, resizeRGB } from "./preprocess.js";

export const HAAR_TO_CROP = [0.092, 0.026, 0.905, 1.105];
const DETECT_MAX_SIDE = 640;
const CASCADE = "haarcascade_frontalface_default.xml";

let ready = null;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.async = true;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(s);
  });
}

/** OpenCV (about 11 MB of WASM in JavaScript) loads on first use, with the cascade. */
export function loadFinder(base = "vendor/") {
  if (!ready) {
    ready = (async () => {
      await loadScript(new URL(base + "opencv.js", document.baseURI).href);
      // Emscripten's module is a thenable that resolves to itself, so awaiting it never ends:
      // take it out of its own then() inside a wrapper instead.
      const { cv } = await new Promise((resolve) => {
        const m = window.cv;
        if (m.Mat) resolve({ cv: m });
        else if (typeof m.then === "function") m.then((ready) => resolve({ cv: ready }));
        else m.onRuntimeInitialized = () => resolve({ cv: m });
      });
      const xml = await fetch(new URL(base + CASCADE, document.baseURI).href);
      if (!xml.ok) throw new Error(`could not load the face cascade (HTTP ${xml.status})`);
      cv.FS_createDataFile("/", CASCADE, new Uint8Array(await xml.arrayBuffer()), true, false, false);
      const classifier = new cv.CascadeClassifier();
      if (!classifier.load(CASCADE)) throw new Error("OpenCV could not read the face cascade");
      return { cv, classifier };
    })();
    ready.catch(() => (ready = null));
  }
  return ready;
}

// cos and sin of 20°, the very numbers src/tandem/faces/finder.py uses.
const TILT_COS = 0.9396926207859084;
const TILT_SIN = 0.3420201433256687;

/** The gray photo turned by 20° (sign ±1) about its centre, nearest pixel, black outside: finder.turned(). */
export function turned(gray, width, height, sign) {
  const out = new Uint8Array(width * height);
  const cx = width / 2;
  const cy = height / 2;
  const s = sign * TILT_SIN;
  for (let v = 0; v < height; v++) {
    const dv = v + 0.5 - cy;
    for (let u = 0; u < width; u++) {
      const du = u + 0.5 - cx;
      const x = Math.floor(TILT_COS * du - s * dv + cx);
      const y = Math.floor(s * du + TILT_COS * dv + cy);
      if (x >= 0 && x < width && y >= 0 && y < height) out[v * width + u] = gray[y * width + x];
    }
  }
  return out;
}

/** A box found in the turned view, as [x, y, w, h] in the photo: finder._upright(). */
function upright(r, sign, width, height) {
  if (sign === 0) return [r.x, r.y, r.width, r.height];
  const cx = width / 2;
  const cy = height / 2;
  const s = sign * TILT_SIN;
  const du = r.x + r.width / 2 - cx;
  const dv = r.y + r.height / 2 - cy;
  const ox = TILT_COS * du - s * dv + cx;
  const oy = s * du + TILT_COS * dv + cy;
  return [ox - r.width / 2, oy - r.height / 2, r.width, r.height];
}

/** Faces as {x, y, w, h} in the photo's pixels, largest first. As the server does
 * (tandem.faces.finder): the photo as it is, then equalised; if still none, turned by 20° each way. */
export async function findFaces(image) {
  const { cv, classifier } = await loadFinder();
  const scale = Math.min(1.0, DETECT_MAX_SIDE / Math.max(image.width, image.height));
  let { data, width, height } = image;
  if (scale !== 1.0) {
    const w = pyRound(image.width * scale);
    const h = pyRound(image.height * scale);
    data = resizeRGB(image.data, image.width, image.height, w, h, "bicubic");
    width = w;
    height = h;
  }
  const rgb = cv.matFromArray(height, width, cv.CV_8UC3, data);
  const gray = new cv.Mat();
  const rects = new cv.RectVector();
  const mats = [rgb, gray, rects];
  try {
    cv.cvtColor(rgb, gray, cv.COLOR_RGB2GRAY);
    const side = Math.max(24, Math.trunc(0.12 * Math.min(height, width)));
    for (const sign of [0, 1, -1]) {
      let view = gray;
      if (sign !== 0) {
        view = cv.matFromArray(height, width, cv.CV_8UC1, turned(gray.data, width, height, sign));
        mats.push(view);
      }
      for (const equalise of [false, true]) {
        let input = view;
        if (equalise) {
          input = new cv.Mat();
          mats.push(input);
          cv.equalizeHist(view, input);
        }
        classifier.detectMultiScale(input, rects, 1.1, 5, 0, new cv.Size(side, side), new cv.Size(0, 0));
        if (rects.size() > 0) {
          const boxes = [];
          for (let i = 0; i < rects.size(); i++) {
            const [x, y, w, h] = upright(rects.get(i), sign, width, height);
            boxes.push({ x: pyRound(x / scale), y: pyRound(y / scale), w: pyRound(w / scale), h: pyRound(h / scale) });
          }
          return boxes.sort((a, b) => b.w * b.h - a.w * a.h);
        }
      }
    }
    return [];
  } finally {
    for (const m of mats) m.delete();
  }
}

export function cropWindow(box) {
  const [x0, y0, x1, y1] = HAAR_TO_CROP;
  return [pyRound(box.x + x0 * box.w), pyRound(box.y + y0 * box.h), pyRound(box.x + x1 * box.w), pyRound(box.y + y1 * box.h)];
}
