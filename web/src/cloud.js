// The cloud side: the server's image endpoint, POST /v1/apps/celebmatch/{model}:predict.

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
  if (!resp.ok) throw new CloudError(`the server answered ${resp.status}: ${body?.error || "no JSON error"}`);
  if (!body || !Array.isArray(body.top)) throw new CloudError("the server's answer is not a celebmatch result");
  return {
    result: body,
    version: Number(resp.headers.get("x-tandem-model-version")) || null,
    timings: { network_ms: networkMs, ...serverTiming(resp.headers.get("server-timing")), total_ms: networkMs },
  };
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
