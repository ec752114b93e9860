// The bundle's preprocessing in the browser: decode, crop, resize to uint8 RGB, exactly as
// src/tandem/bundle/preprocess.py does it (docs/bundle.md), so that the model sees the same bytes here
// as on the server. The resize is a port of Pillow's 8-bit resampler (libImaging/Resample.c):
// a separable filter whose support widens with the downscale factor, fixed-point coefficients
// with 22 fractional bits, and a horizontal pass rounded to uint8 before the vertical one.

import { NOT_A_PHOTO } from "./messages.js";

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);
const CLIP_HIGH = 2 ** (PRECISION_BITS + 8);

export const FILTERS = {
  bilinear: {
    support: 1.0,
    fn: (x) => {
      x = Math.abs(x);
      return x < 1.0 ? 1.0 - x : 0.0;
    },
  },
  bicubic: {
    support: 2.0,
    fn: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
};

/** Python's round(): halves go to the even neighbour (JavaScript's Math.round goes up). */
export function pyRound(x) {
  if (Math.abs(x % 1) === 0.5) return 2 * Math.round(x / 2);
  return Math.round(x);
}

function clip8(ss) {
  if (ss >= CLIP_HIGH) return 255;
  if (ss <= 0) return 0;
  return Math.floor(ss / ONE);
}

function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Int32Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  const ss = 1.0 / filterscale;
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      w[x] = filter.fn((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0.0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { kk, bounds, ksize };
}

/**
 * Resize an RGB image (Uint8Array, 3 bytes per pixel, row-major) like Pillow's
 * ``Image.resize((outW, outH), filter)``. Returns a new Uint8Array.
 */
export function resizeRGB(src, inW, inH, outW, outH, filterName = "bilinear") {
  const filter = FILTERS[filterName];
  if (!filter) throw new Error(`unknown filter ${filterName}`);
  if (inW === outW && inH === outH) return src.slice();
  const needH = inW !== outW;
  const needV = inH !== outH;
  let cur = src;
  let curW = inW;
  if (needH) {
    const { kk, bounds, ksize } = coefficients(inW, outW, filter);
    const out = new Uint8Array(outW * inH * 3);
    for (let y = 0; y < inH; y++) {
      const row = y * inW * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2];
        const xmax = bounds[xx * 2 + 1];
        const k = xx * ksize;
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0; x < xmax; x++) {
          const p = row + (x + xmin) * 3;
          const c = kk[k + x];
          s0 += cur[p] * c;
          s1 += cur[p + 1] * c;
          s2 += cur[p + 2] * c;
        }
        const o = (y * outW + xx) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    cur = out;
    curW = outW;
  }
  if (needV) {
    const { kk, bounds, ksize } = coefficients(inH, outH, filter);
    const out = new Uint8Array(curW * outH * 3);
    for (let yy = 0; yy < outH; yy++) {
      const ymin = bounds[yy * 2];
      const ymax = bounds[yy * 2 + 1];
      const k = yy * ksize;
      for (let x = 0; x < curW; x++) {
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let y = 0; y < ymax; y++) {
          const p = ((y + ymin) * curW + x) * 3;
          const c = kk[k + y];
          s0 += cur[p] * c;
          s1 += cur[p + 1] * c;
          s2 += cur[p + 2] * c;
        }
        const o = (yy * curW + x) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    cur = out;
  }
  return cur;
}

/** Pillow's ``crop(box)``: pixels outside the image read as black. */
export function cropRGB(src, w, h, [x0, y0, x1, y1]) {
  const cw = x1 - x0;
  const ch = y1 - y0;
  const out = new Uint8Array(cw * ch * 3);
  for (let y = Math.max(0, -y0); y < ch; y++) {
    const sy = y + y0;
    if (sy >= h) break;
    const xs = Math.max(0, -x0);
    const xe = Math.min(cw, w - x0);
    if (xe <= xs) continue;
    out.set(src.subarray((sy * w + xs + x0) * 3, (sy * w + xe + x0) * 3), (y * cw + xs) * 3);
  }
  return out;
}

function roundHalfUp(v) {
  return Math.floor(v + 0.5);
}

/** The spec's crop window in pixels (x0, y0, x1, y1), as PreprocessSpec.crop_pixels computes it. */
export function cropPixels(spec, width, height) {
  const crop = spec.crop || { mode: "center" };
  if (crop.mode === "none") return [0, 0, width, height];
  if (crop.mode === "box") {
    const [x0, y0, x1, y1] = crop.box;
    return [roundHalfUp(x0 * width), roundHalfUp(y0 * height), roundHalfUp(x1 * width), roundHalfUp(y1 * height)];
  }
  if (width * spec.height > height * spec.width) {
    const w = Math.floor((2 * height * spec.width + spec.height) / (2 * spec.height));
    const x0 = Math.floor((width - w) / 2);
    return [x0, 0, x0 + w, height];
  }
  const h = Math.floor((2 * width * spec.height + spec.width) / (2 * spec.width));
  const y0 = Math.floor((height - h) / 2);
  return [0, y0, width, y0 + h];
}

/** One model input (H×W×3 uint8) from a decoded image; ``box`` overrides the spec's crop. */
export function toInput(image, spec, box = null) {
  const win = box || cropPixels(spec, image.width, image.height);
  if (win[2] <= win[0] || win[3] <= win[1]) {
    throw new Error(`the crop window ${win} of a ${image.width}×${image.height} image is empty; the image is too small`);
  }
  const cropped = cropRGB(image.data, image.width, image.height, win);
  return resizeRGB(cropped, win[2] - win[0], win[3] - win[1], spec.width, spec.height, "bilinear");
}

export const MAX_IMAGE_PIXELS = 40_000_000;

/**
 * The size a photo is read at: as it is up to MAX_IMAGE_PIXELS; a bigger one (a 48 or 200 MP phone
 * photo) at a half, a quarter or an eighth of its sides, the steps a JPEG's own decoder scales by, as
 * the Python side reads it (Pillow's draft mode); [0, 0] past an eighth.
 */
export function reducedSize(width, height) {
  for (const scale of [1, 2, 4, 8]) {
    const w = Math.ceil(width / scale);
    const h = Math.ceil(height / scale);
    if (w * h <= MAX_IMAGE_PIXELS) return [w, h];
  }
  return [0, 0];
}

/**
 * Decode a photo (Blob/File/ArrayBuffer) into {width, height, data: RGB Uint8Array}, upright
 * (EXIF orientation applied, as Pillow's exif_transpose does) and without colour management, so
 * the bytes are the file's own, as Pillow reads them.
 */
export async function decodeImage(source) {
  const blob = source instanceof Blob ? source : new Blob([source]);
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      imageOrientation: "from-image",
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
    });
  } catch {
    // The browser's own words ("The source image could not be decoded") say nothing to a person.
    throw new Error(NOT_A_PHOTO);
  }
  const [width, height] = reducedSize(bitmap.width, bitmap.height);
  if (!width) {
    const size = `${bitmap.width}×${bitmap.height}`;
    bitmap.close();
    throw new Error(`this photo is too large (${size}, over ${(MAX_IMAGE_PIXELS * 64).toLocaleString()} pixels even at an eighth of its size); choose a smaller photo`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const data = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    data[j] = rgba[i];
    data[j + 1] = rgba[i + 1];
    data[j + 2] = rgba[i + 2];
  }
  return { width, height, data };
}
