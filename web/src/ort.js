// onnxruntime-web, configured once for the whole page (its WebAssembly starts once, with the first
// session, and keeps the thread count it started with).
//
// Threads: WASM threads need SharedArrayBuffer, which a browser gives only a cross-origin isolated
// page (the server sends COOP and COEP under /app, server/webapp.py). Isolated: up to two threads
// (this project's target devices and its test machine have two cores); otherwise one. A worker may
// choose fewer before its first session (the deep-art view's thread picker).
//
// The WebAssembly glue (a small .mjs) is loaded as its own file rather than from the app's bundle:
// each extra thread is a worker that loads the glue's URL, and a worker loading the app's bundle
// would run the whole page's code where there is no page.
import * as ort from "onnxruntime-web/wasm";
import glueUrl from "onnxruntime-web/ort-wasm-simd-threaded.mjs?url";
import wasmUrl from "onnxruntime-web/ort-wasm-simd-threaded.wasm?url";

export const MAX_THREADS = globalThis.crossOriginIsolated ? Math.max(1, Math.min(2, navigator.hardwareConcurrency || 1)) : 1;

ort.env.wasm.numThreads = MAX_THREADS;
ort.env.wasm.wasmPaths = { mjs: new URL(glueUrl, import.meta.url).href, wasm: new URL(wasmUrl, import.meta.url).href };

/** Threads for this thread's (or worker's) sessions: within 1..MAX_THREADS; only before its first session. */
export function useThreads(n) {
  ort.env.wasm.numThreads = Math.max(1, Math.min(MAX_THREADS, Math.floor(n) || MAX_THREADS));
  return ort.env.wasm.numThreads;
}

export const SESSION_OPTIONS = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };

export { ort };
