// The cloud side: the server's image endpoints, POST /v1/apps/celebmatch/{model}:predict and (deep art) /v1/apps/deepart/{model}:predict.
import { readCapped } from "./capped.js";
import { NOT_A_PHOTO, noFace } from "./messages.js";

export class CloudError extends Error {}

/** The photo's bytes as they are: the server decodes, finds the face and crops. */
export async function matchInCloud({ base = "", predictKey, model, alias, photo, detect = true, timeoutMs = 10000 }) {
  const params = new URLSearchParams({ detect: String(detect) });
  if (alias) params.set(/^\d+$/.test(alias) ? "version" : "alias", alias);
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  const t0 = performance.now();
  let resp;
  try {
    resp = await fetch(`${base}/v1/apps/celebmatch/${encodeURIComponent(model)}:predict?${params}`, {
      method: "POST",
      headers: { authorization: `Bearer ${predictKey}`, "content-type": photo.type || "application/octet-stream" },
      body: photo,
      signal: ctrl.signal,
      cache: "no-store",
    });
  } catch (e) {
    throw new CloudError(ctrl.signal.aborted ? `the server did not answer within ${timeoutMs} ms` : `cannot reach the server (${e.message})`);
  } finally {
    clearTimeout(timer);
  }
  const body = await resp.json().catch(() => null);
  const networkMs = performance.now() - t0;
  if (!resp.ok) throw new CloudError(refusal(resp.status, body?.error));
  if (!body || !Array.isArray(body.top)) throw new CloudError("the server's answer is not a celebmatch result");
  return {
    result: body,
    version: Number(resp.headers.get("x-tandem-model-version")) || null,
    timings: { network_ms: networkMs, ...serverTiming(resp.headers.get("server-timing")), total_ms: networkMs },
  };
}

/**
 * The server's refusal in the page's words where the page knows them: a photo without a face (422) or
 * not a photo at all are said as the device side says them, naming the page's control where the server
 * names its own (its "?detect=false": offered when the face finder found nothing); any other refusal
 * is the server's own message.
 */
function refusal(status, error = "") {
  if (status === 422) return noFace({ finder: /[?&]detect=false/.test(error) });
  if (status === 400 && /not a readable image/.test(error)) return NOT_A_PHOTO;
  return `the server answered ${status}: ${error || "no JSON error"}`;
}

/** Server-Timing: "decode;dur=3.1, infer;dur=4.0" -> {server_decode_ms: 3.1, server_infer_ms: 4.0}. */
function serverTiming(header) {
  const out = {};
  for (const part of (header || "").split(",")) {
    const m = /^\s*([\w-]+)\s*;.*dur=([\d.]+)/.exec(part);
    if (m) out[`server_${m[1]}_ms`] = Number(m[2]);
  }
  return out;
}

// A painted frame is at most 1024 pixels on its longest side (apps/deepart.py): far under this as JPEG
// or PNG. Anything longer is not an answer to the frame, and the page does not hold it.
const MAX_PICTURE_BYTES = 16 << 20;

/**
 * One camera frame painted by the cloud: ``frame`` (a JPEG Blob) to POST /v1/apps/deepart/{model}:predict,
 * the picture back as a Blob, with the bytes each way, the round trip (request sent to the last byte
 * received) and the server's stages (Server-Timing).
 */
export async function paintInCloud({ base = "", predictKey, model, alias, frame, accept = "image/jpeg", timeoutMs = 10000 }) {
  const params = new URLSearchParams();
  if (alias) params.set(/^\d+$/.test(alias) ? "version" : "alias", alias);
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  const t0 = performance.now();
  let resp;
  let bytes;
  try {
    resp = await fetch(`${base}/v1/apps/deepart/${encodeURIComponent(model)}:predict?${params}`, {
      method: "POST",
      headers: { authorization: `Bearer ${predictKey}`, "content-type": frame.type || "image/jpeg", accept },
      body: frame,
      signal: ctrl.signal,
      cache: "no-store",
    });
    bytes = await readCapped(resp, MAX_PICTURE_BYTES, () => new CloudError(
      `the server's answer is over ${MAX_PICTURE_BYTES} bytes, more than any painted frame; refusing it`));
  } catch (e) {
    if (e instanceof CloudError) throw e;
    throw new CloudError(ctrl.signal.aborted ? `the server did not answer within ${timeoutMs} ms` : `cannot reach the server (${e.message})`);
  } finally {
    clearTimeout(timer);
  }
  const roundTripMs = performance.now() - t0;
  const type = (resp.headers.get("content-type") || "").split(";")[0].trim();
  if (!resp.ok) {
    let error = "";
    try {
      error = JSON.parse(new TextDecoder().decode(bytes)).error || "";
    } catch {
      // not JSON: said below without the server's words
    }
    throw new CloudError(`the server answered ${resp.status}: ${error || "no JSON error"}`);
  }
  if (type !== "image/jpeg" && type !== "image/png") throw new CloudError(`the server's answer is ${type || "untyped"}, not a picture`);
  return {
    picture: new Blob([bytes], { type }),
    version: Number(resp.headers.get("x-tandem-model-version")) || null,
    upBytes: frame.size,
    downBytes: bytes.length,
    timings: { round_trip_ms: roundTripMs, ...serverTiming(resp.headers.get("server-timing")) },
  };
}

