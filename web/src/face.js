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

/** Faces as {x, y, w, h} in the photo's pixels, largest first. */
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
  const eq = new cv.Mat();
  const rects = new cv.RectVector();
  try {
    cv.cvtColor(rgb, gray, cv.COLOR_RGB2GRAY);
    const side = Math.max(24, Math.trunc(0.12 * Math.min(height, width)));
    // As the server does (tandem.faces.finder): the photo as it is, then equalised if no face was found.
    classifier.detectMultiScale(gray, rects, 1.1, 5, 0, new cv.Size(side, side), new cv.Size(0, 0));
    if (rects.size() === 0) {
      cv.equalizeHist(gray, eq);
      classifier.detectMultiScale(eq, rects, 1.1, 5, 0, new cv.Size(side, side), new cv.Size(0, 0));
    }
    const boxes = [];
    for (let i = 0; i < rects.size(); i++) {
      const r = rects.get(i);
      boxes.push({ x: pyRound(r.x / scale), y: pyRound(r.y / scale), w: pyRound(r.width / scale), h: pyRound(r.height / scale) });
    }
    return boxes.sort((a, b) => b.w * b.h - a.w * a.h);
  } finally {
    rgb.delete();
    gray.delete();
    eq.delete();
    rects.delete();
  }
}

export function cropWindow(box) {
  const [x0, y0, x1, y1] = HAAR_TO_CROP;
  return [pyRound(box.x + x0 * box.w), pyRound(box.y + y0 * box.h), pyRound(box.x + x1 * box.w), pyRound(box.y + y1 * box.h)];
}
