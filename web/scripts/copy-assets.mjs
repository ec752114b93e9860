// Copies what the page loads at run time but no bundler should touch into public/ (git-ignored):
// OpenCV's opencv.js (11 MB, loaded only when a face must be found) and the Haar cascade the
// server's face finder uses (taken from the Python opencv package: both sides run the same file).
// opencv.js is patched on the way so that it runs under the page's CSP without eval (opencv-csp.mjs).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { withoutEval } from "./opencv-csp.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const pub = path.join(root, "public");

function copy(src, dst) {
  if (!fs.existsSync(src)) {
    console.error(`missing ${src}`);
    process.exit(1);
  }
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  fs.copyFileSync(src, dst);
}

function findCascade() {
  const name = "haarcascade_frontalface_default.xml";
  if (process.env.HAAR_CASCADE) return process.env.HAAR_CASCADE;
  const lib = path.join(root, "..", ".venv", "lib");
  for (const py of fs.existsSync(lib) ? fs.readdirSync(lib) : []) {
    const p = path.join(lib, py, "site-packages", "cv2", "data", name);
    if (fs.existsSync(p)) return p;
  }
  console.error(`cannot find ${name}: set HAAR_CASCADE to its path (python -c "import cv2; print(cv2.data.haarcascades)")`);
  process.exit(1);
}

const opencv = path.join(root, "node_modules", "@techstark", "opencv-js", "dist", "opencv.js");
copy(opencv, path.join(pub, "vendor", "opencv.js"));
fs.writeFileSync(path.join(pub, "vendor", "opencv.js"), withoutEval(fs.readFileSync(opencv, "utf8")));
copy(findCascade(), path.join(pub, "vendor", "haarcascade_frontalface_default.xml"));
