// Face alignment in the browser, step for step as src/tandem/faces/align.py (docs/bundle.md):
// the face box → an integer square → 48×48 (Pillow's bilinear) → the landmark network → five points
// → the least-squares similarity onto the template → (a Pillow resize first when it shrinks) → the
// bilinear warp at each output pixel's centre, edges repeated, rounded half up.
import { cropRGB, pyRound, resizeRGB } from "./preprocess.js";

export const LANDMARK_SIZE = 48;

const floorHalfUp = (v) => Math.floor(v + 0.5);

/** The integer square (x0, y0, x1, y1) around a face box's centre that the landmark network sees. */
export function landmarkBox([x0, y0, x1, y1]) {
  const side = Math.max(1, floorHalfUp(Math.max(x1 - x0, y1 - y0)));
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const sx = floorHalfUp(cx - side / 2);
  const sy = floorHalfUp(cy - side / 2);
  return [sx, sy, sx + side, sy + side];
}

export function landmarkInput(image, box) {
  const sq = landmarkBox(box);
  const side = sq[2] - sq[0];
  const crop = cropRGB(image.data, image.width, image.height, sq);
  return { pixels: resizeRGB(crop, side, side, LANDMARK_SIZE, LANDMARK_SIZE, "bilinear"), square: sq };
}

/** The network's 10 outputs (x1..x5, y1..y5, fractions of the square) as five [x, y] points. */
export function pointsInImage(lm, [x0, y0, x1]) {
  const side = x1 - x0;
  const pts = [];
  for (let i = 0; i < 5; i++) pts.push([x0 + lm[i] * side, y0 + lm[5 + i] * side]);
  return pts;
}

/** The 2×3 rotation + uniform scale + shift that best maps src onto dst (least squares). */
export function similarity(src, dst) {
  const n = src.length;
  let smx = 0;
  let smy = 0;
  let dmx = 0;
  let dmy = 0;
  for (let i = 0; i < n; i++) {
    smx += src[i][0];
    smy += src[i][1];
    dmx += dst[i][0];
    dmy += dst[i][1];
  }
  smx /= n;
  smy /= n;
  dmx /= n;
  dmy /= n;
  let norm = 0;
  let a = 0;
  let b = 0;
  for (let i = 0; i < n; i++) {
    const sx = src[i][0] - smx;
    const sy = src[i][1] - smy;
    const dx = dst[i][0] - dmx;
    const dy = dst[i][1] - dmy;
    norm += sx * sx + sy * sy;
    a += sx * dx + sy * dy;
    b += sx * dy - sy * dx;
  }
  if (norm < 1e-9) throw new Error("the face's landmarks coincide; the face is too small or not a face");
  a /= norm;
  b /= norm;
  return [
    [a, -b, dmx - (a * smx - b * smy)],
    [b, a, dmy - (b * smx + a * smy)],
  ];
}

function invert(m) {
  const det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
  const i00 = m[1][1] / det;
  const i01 = -m[0][1] / det;
  const i10 = -m[1][0] / det;
  const i11 = m[0][0] / det;
  return [
    [i00, i01, -(i00 * m[0][2] + i01 * m[1][2])],
    [i10, i11, -(i10 * m[0][2] + i11 * m[1][2])],
  ];
}

/** Output pixel (u, v) = the bilinear sample of src at M⁻¹(u+½, v+½), edges repeated. */
export function warp(src, w, h, m, outH, outW) {
  const inv = invert(m);
  const out = new Uint8Array(outH * outW * 3);
  for (let v = 0; v < outH; v++) {
    const vv = v + 0.5;
    for (let u = 0; u < outW; u++) {
      const uu = u + 0.5;
      let sx = inv[0][0] * uu + inv[0][1] * vv + inv[0][2] - 0.5;
      let sy = inv[1][0] * uu + inv[1][1] * vv + inv[1][2] - 0.5;
      sx = Math.min(Math.max(sx, 0.0), w - 1.0);
      sy = Math.min(Math.max(sy, 0.0), h - 1.0);
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const x1 = Math.min(x0 + 1, w - 1);
      const y1 = Math.min(y0 + 1, h - 1);
      const p00 = (y0 * w + x0) * 3;
      const p01 = (y0 * w + x1) * 3;
      const p10 = (y1 * w + x0) * 3;
      const p11 = (y1 * w + x1) * 3;
      const o = (v * outW + u) * 3;
      for (let c = 0; c < 3; c++) {
        const top = src[p00 + c] * (1.0 - fx) + src[p01 + c] * fx;
        const bottom = src[p10 + c] * (1.0 - fx) + src[p11 + c] * fx;
        out[o + c] = Math.min(Math.floor(top * (1.0 - fy) + bottom * fy + 0.5), 255);
      }
    }
  }
  return out;
}

/** The canonical crop of the face with these five landmarks, and the transform (image → crop). */
export function alignedCrop(image, points, spec) {
  const m = similarity(points, spec.template);
  const scale = Math.hypot(m[0][0], m[1][0]);
  if (scale >= 1.0) return { pixels: warp(image.data, image.width, image.height, m, spec.height, spec.width), m };
  const inv = invert(m);
  const corners = [[0, 0], [spec.width, 0], [0, spec.height], [spec.width, spec.height]].map(([x, y]) => [
    inv[0][0] * x + inv[0][1] * y + inv[0][2],
    inv[1][0] * x + inv[1][1] * y + inv[1][2],
  ]);
  const xs = corners.map((c) => c[0]);
  const ys = corners.map((c) => c[1]);
  const rx0 = Math.max(0, Math.floor(Math.min(...xs)) - 1);
  const ry0 = Math.max(0, Math.floor(Math.min(...ys)) - 1);
  const rx1 = Math.min(image.width, Math.ceil(Math.max(...xs)) + 1);
  const ry1 = Math.min(image.height, Math.ceil(Math.max(...ys)) + 1);
  if (rx1 - rx0 < 2 || ry1 - ry0 < 2) throw new Error("the face lies outside the photo; use a photo where the whole face is visible");
  const nw = Math.max(2, floorHalfUp((rx1 - rx0) * scale));
  const nh = Math.max(2, floorHalfUp((ry1 - ry0) * scale));
  const region = resizeRGB(cropRGB(image.data, image.width, image.height, [rx0, ry0, rx1, ry1]), rx1 - rx0, ry1 - ry0, nw, nh, "bilinear");
  const sx = nw / (rx1 - rx0);
  const sy = nh / (ry1 - ry0);
  const m2 = [
    [m[0][0] / sx, m[0][1] / sy, m[0][0] * rx0 + m[0][1] * ry0 + m[0][2]],
    [m[1][0] / sx, m[1][1] / sy, m[1][0] * rx0 + m[1][1] * ry0 + m[1][2]],
  ];
  return { pixels: warp(region, nw, nh, m2, spec.height, spec.width), m };
}

/** The photo region the crop shows (integer bounding box), as kit.py's _window. */
export function cropBounds(m, spec) {
  const a = m[0][0];
  const b = m[1][0];
  const det = a * a + b * b;
  const pts = [[0, 0], [spec.width, 0], [0, spec.height], [spec.width, spec.height]].map(([x, y]) => {
    const dx = x - m[0][2];
    const dy = y - m[1][2];
    return [(a * dx + b * dy) / det, (-b * dx + a * dy) / det];
  });
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  return [Math.floor(Math.min(...xs)), Math.floor(Math.min(...ys)), Math.ceil(Math.max(...xs)), Math.ceil(Math.max(...ys))];
}

/** The whole face and one copy per region, everything else in the fill colour (align.py's region_views). */
export function regionViews(pixels, height, width, regions, fill) {
  const size = height * width * 3;
  const names = Object.keys(regions);
  const batch = new Uint8Array(size * (names.length + 1));
  batch.set(pixels, 0);
  names.forEach((name, i) => {
    const [x0, y0, x1, y1] = regions[name];
    const off = size * (i + 1);
    for (let p = 0; p < height * width; p++) batch.set(fill, off + p * 3);
    const r0 = pyRound(y0 * height);
    const r1 = pyRound(y1 * height);
    const c0 = pyRound(x0 * width);
    const c1 = pyRound(x1 * width);
    for (let r = r0; r < r1; r++) batch.set(pixels.subarray((r * width + c0) * 3, (r * width + c1) * 3), off + (r * width + c0) * 3);
  });
  return batch;
}
