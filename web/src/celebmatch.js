// celebmatch on the device: the same views, gallery scoring and sentence as
// src/tandem/apps/celebmatch (gallery.py and matcher.py), so that both modes give one answer.
import { regionViews } from "./align.js";
import { pyRound } from "./preprocess.js";

const DEFAULT_REGIONS = {
  eyes: [0.0, 0.22, 1.0, 0.46],
  nose: [0.27, 0.38, 0.73, 0.66],
  mouth: [0.17, 0.6, 0.83, 0.84],
};

export function displayName(label) {
  return label.replaceAll("_", " ");
}

export function percent(similarity) {
  return pyRound(Math.max(0.0, similarity) * 100);
}

/** numpy's interp: linear between the calibration's points, clipped at its ends. */
export function interp(x, xs, ys) {
  if (x <= xs[0]) return ys[0];
  const n = xs.length;
  if (x >= xs[n - 1]) return ys[n - 1];
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] <= x) lo = mid;
    else hi = mid;
  }
  const slope = (ys[hi] - ys[lo]) / (xs[hi] - xs[lo]);
  return slope * (x - xs[lo]) + ys[lo];
}

export class Gallery {
  constructor(arrays, views) {
    this.names = arrays.names.data;
    this.dim = arrays.view_face.shape[1];
    this.vectors = {};
    this.centers = {};
    for (const v of views) {
      if (!arrays[`view_${v}`] || !arrays[`center_${v}`]) throw new Error(`the gallery has no ${v} vectors; enrol again`);
      this.vectors[v] = arrays[`view_${v}`].data;
      this.centers[v] = arrays[`center_${v}`].data;
    }
    // Face-embedding bundles: the similarity below which the best match is "no close match".
    this.threshold = arrays.threshold ? arrays.threshold.data[0] : null;
  }

  /** Cosine similarity of one embedding with every identity (Gallery.query). */
  query(view, embedding) {
    const c = this.centers[view];
    const d = this.dim;
    const e = new Float64Array(d);
    let norm = 0;
    for (let i = 0; i < d; i++) {
      e[i] = embedding[i] - c[i];
      norm += e[i] * e[i];
    }
    norm = Math.max(Math.sqrt(norm), 1e-12);
    const vec = this.vectors[view];
    const sims = new Float64Array(this.names.length);
    for (let j = 0; j < this.names.length; j++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += (e[i] / norm) * vec[j * d + i];
      sims[j] = s;
    }
    return sims;
  }
}

export class CelebMatch {
  /** manifest: the bundle's manifest; arrays: the gallery's .npz arrays. */
  constructor(manifest, arrays) {
    this.spec = manifest.preprocessing;
    this.faces = manifest.apps?.faces || null; // alignment, calibration (face-embedding bundles)
    this.regions = this.faces?.regions || manifest.apps?.celebmatch?.regions || DEFAULT_REGIONS;
    this.views = ["face", ...Object.keys(this.regions)];
    this.gallery = new Gallery(arrays, this.views);
  }

  /** The calibrated percentage for a view's similarity (schema-1 bundles: the cosine). */
  percentOf(view, similarity) {
    const curve = this.faces?.calibration?.[view];
    if (!curve) return percent(similarity);
    return pyRound(100 * interp(similarity, curve.x, curve.y));
  }

  /** The whole face, then one copy per region with everything else in the training mean colour. */
  viewBatch(pixels) {
    const { height: h, width: w } = this.spec;
    const fill = this.faces?.fill || this.spec.normalize_in_graph.mean.map((m) => pyRound(m * 255));
    return regionViews(pixels, h, w, this.regions, new Uint8Array(fill));
  }

  /** MatchResult.to_json() from the embeddings of viewBatch's rows (Float32Array, rows × dim). */
  score(embeddings, faceBox, cropWindow, topK = 3, landmarks = null) {
    const g = this.gallery;
    const row = (i) => embeddings.subarray(i * g.dim, (i + 1) * g.dim);
    const like = (view, idx, sim) => ({ name: displayName(g.names[idx]), label: g.names[idx], similarity: sim, percent: this.percentOf(view, sim) });
    const faceSims = g.query("face", row(0));
    const order = Array.from(faceSims.keys()).sort((a, b) => faceSims[b] - faceSims[a]).slice(0, topK);
    const top = order.map((i) => like("face", i, faceSims[i]));
    const parts = {};
    this.views.slice(1).forEach((part, k) => {
      const sims = g.query(part, row(k + 1));
      let j = 0;
      for (let i = 1; i < sims.length; i++) if (sims[i] > sims[j]) j = i;
      parts[part] = like(part, j, sims[j]);
    });
    const noMatch = g.threshold !== null && faceSims[order[0]] < g.threshold;
    const lm = landmarks ? landmarks.map(([x, y]) => [pyRound2(x), pyRound2(y)]) : null;
    return { sentence: sentence(top, parts, noMatch), top, parts, face_box: faceBox, crop_window: cropWindow, no_match: noMatch, landmarks: lm };
  }
}

/** Python's round(x, 2). */
function pyRound2(x) {
  return pyRound(x * 100) / 100;
}

export function sentence(top, parts, noMatch = false) {
  const best = top[0];
  if (noMatch) return `No close match — the nearest is ${best.name} (${best.percent}%)`;
  const head = `You look ${best.percent}% like ${best.name}`;
  const others = Object.entries(parts).filter(([, lk]) => lk.label !== best.label);
  if (!others.length) return `${head} — ${Object.keys(parts).join(", ")} included.`;
  let [part, lk] = others[0];
  for (const [p, l] of others) if (l.similarity > lk.similarity) [part, lk] = [p, l];
  return `${head} — but you have ${lk.name}'s ${part} (${lk.percent}%)`;
}
