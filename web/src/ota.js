// Over-the-air model delivery in the browser: the wire contract of docs/ota.md, as the Python SDK
// (tandem.device.ModelUpdater) follows it: register as a device, check, verify the Ed25519-signed
// payload and its claims, download, verify hashes, fetch the data key, decrypt (AES-256-GCM), cache
// for offline use.
//
// The page is a device like any other: the device key the user gives it is the fleet's, good only to
// enrol (POST /v1/devices). The per-device credential the server answers is kept in IndexedDB (never
// in the URL or localStorage) and sent on every OTA call; the server, not the page, names the device.

import { readCapped } from "./capped.js";
import * as store from "./store.js";

const SCHEMA = 2; // payload schema 2: every answer signed ("stay" too), bound to this device, with an expiry
const MAGIC = "TDE1";
const CLOCK_SKEW_MS = 5 * 60 * 1000; // as the Python SDK: a device's clock may be 5 minutes off
const ROLLBACK_REASONS = ["rolled_back", "pin"]; // downgrades the server signs only when it recorded them
const CREDENTIAL = /^tdd_([0-9a-f]{20})_[A-Za-z0-9_-]{43}$/;
const MAX_ANSWER_BYTES = 1 << 20; // a check answer, a key, a message: anything larger is not one

export class OtaError extends Error {}
export class Offline extends OtaError {}

const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
export const sha256 = async (bytes) => hex(await crypto.subtle.digest("SHA-256", bytes));

export class ModelUpdater {
  /** base: the server's URL ("" for this page's own); deviceKey: the fleet's API key of scope device (it only enrols). */
  constructor({ base = "", deviceKey, model, channel = "production", appVersion = "1.0.0", precision = "fp32", onProgress }) {
    this.base = base;
    this.deviceKey = deviceKey;
    this.model = model;
    this.channel = channel;
    this.appVersion = appVersion;
    this.precision = precision;
    this.onProgress = onProgress || (() => {});
    this.stateKey = `${model}:${channel}`;
    this.answerKey = `answer:${model}:${channel}`;
  }

  /** The server this page talks to, as the registration is bound to it. */
  get server() {
    return this.base || location.origin;
  }

  async _fetch(path, init = {}) {
    if (!path.startsWith("/v1/ota/")) throw new OtaError(`refusing to fetch ${path}: OTA URLs are paths on this server`);
    const { credential } = await this.registration();
    const resp = await this._send(path, init, credential);
    if (resp.status === 401) {
      const body = await readJson(resp);
      throw new OtaError(
        `the server refused this browser's device credential (401: ${body.error || "no reason given"}): the operator revoked ` +
          "this device, or the server's registry is another; clear this site's data to register anew",
      );
    }
    if (resp.status === 403) {
      const body = await readJson(resp);
      throw new OtaError(`the server refused this device (403: ${body.error || "no reason given"}); check the device key`);
    }
    if (resp.status >= 500) throw new Offline(`the server answered ${resp.status}`);
    return resp;
  }

  async _send(path, init, token) {
    try {
      return await fetch(this.base + path, {
        ...init,
        headers: { ...(init.headers || {}), authorization: `Bearer ${token}` },
        cache: "no-store",
      });
    } catch (e) {
      throw new Offline(`cannot reach the server (${e.message})`);
    }
  }

  /**
   * This browser's registration with the server: {device_id, credential}, made once with the fleet's
   * device key (POST /v1/devices) and kept in IndexedDB, bound to the server and to the key's public id
   * (another server or another fleet key: a new registration).
   */
  async registration() {
    const keyId = /^tdm_([0-9a-f]{12})_/.exec(this.deviceKey || "")?.[1] || "";
    const saved = await store.get("state", "device");
    if (saved && saved.server === this.server && saved.enrolled_with === keyId && CREDENTIAL.test(saved.credential)) return saved;
    if (!this._registering) {
      this._registering = this._register(keyId).finally(() => {
        this._registering = null;
      });
    }
    return this._registering;
  }

  async _register(keyId) {
    if (!this.deviceKey) throw new OtaError("no device key: the page needs the fleet's device key to register once");
    const resp = await this._send("/v1/devices", { method: "POST" }, this.deviceKey);
    const body = await readJson(resp);
    if (resp.status >= 500) throw new Offline(`device registration: the server answered ${resp.status}`);
    if (resp.status !== 201 && resp.status !== 200) {
      throw new OtaError(`device registration refused (HTTP ${resp.status}: ${body.error || "no reason given"}); check the device key`);
    }
    const m = CREDENTIAL.exec(typeof body.credential === "string" ? body.credential : "");
    if (!m || m[1] !== body.device_id) throw new OtaError("device registration: the server's answer holds no valid credential");
    const saved = { device_id: body.device_id, credential: body.credential, server: this.server, enrolled_with: keyId, created: body.created };
    await store.put([["state", "device", saved]]);
    return saved;
  }

  /** The id the server assigned this browser (registering first if need be). */
  async deviceId() {
    return (await this.registration()).device_id;
  }

  /** What the device says of itself; no device_id: the credential names the device. */
  fields() {
    return { channel: this.channel, platform: "web", app_version: this.appVersion };
  }

  /** The trusted signing keys: the server's list, fetched once and kept (trust on first use). */
  async trustedKeys(refresh = false) {
    let keys = refresh ? null : await store.get("state", "signing_keys");
    if (!keys) {
      const resp = await this._fetch("/v1/ota/signing-keys");
      if (!resp.ok) throw new OtaError(`could not list the signing keys (HTTP ${resp.status})`);
      keys = (await readJson(resp)).keys;
      if (!Array.isArray(keys)) throw new OtaError("the server's signing-key list is malformed");
      await store.put([["state", "signing_keys", keys]]);
    }
    return keys;
  }

  async installed() {
    return (await store.get("state", this.stateKey)) || null;
  }

  /** The last signed answer this browser verified ({issued_at, expires_at, action, reason, version, sequence}), or null. */
  async lastSignedAnswer() {
    return (await store.get("state", this.answerKey)) || null;
  }

  /** Seconds since the server signed the last answer this browser verified (null: never). Unsigned answers never reset it. */
  async answerAgeS() {
    const last = await this.lastSignedAnswer();
    return last ? Math.max(0, (Date.now() - Date.parse(last.issued_at)) / 1000) : null;
  }

  async _verify(envelope) {
    if (typeof envelope?.payload !== "string" || typeof envelope?.signature !== "string" || typeof envelope?.key_id !== "string") {
      throw new OtaError("the check answer is not a signed envelope (payload, signature, key_id)");
    }
    const payloadBytes = b64(envelope.payload);
    let trusted = (await this.trustedKeys()).find((k) => k.key_id === envelope.key_id);
    if (!trusted) trusted = (await this.trustedKeys(true)).find((k) => k.key_id === envelope.key_id);
    if (!trusted) throw new OtaError(`the payload is signed with unknown key ${envelope.key_id}`);
    const pub = await crypto.subtle.importKey("raw", b64(trusted.public_key), { name: "Ed25519" }, false, ["verify"]);
    if (!(await crypto.subtle.verify({ name: "Ed25519" }, pub, b64(envelope.signature), payloadBytes))) {
      throw new OtaError("the payload's signature does not verify: refusing it");
    }
    return JSON.parse(new TextDecoder().decode(payloadBytes));
  }

  /** The claims of a verified payload, as the Python SDK checks them (tandem.device.payload.check_claims). */
  _checkClaims(p, installed, deviceId, lastSequence, now = Date.now()) {
    const fail = (why) => {
      throw new OtaError(`refusing the server's answer: ${why}`);
    };
    if (!p || typeof p !== "object") fail("the payload is not a JSON object");
    if (p.schema !== SCHEMA) fail(`payload schema ${p.schema} is not ${SCHEMA}`);
    if (p.model !== this.model) fail(`it is for model ${p.model}, not ${this.model}`);
    if (p.channel !== this.channel) fail(`it is for channel ${p.channel}, not ${this.channel}`);
    if (p.device_id !== deviceId) fail(`it was issued to device ${p.device_id}, not to this one (${deviceId}): swapped or replayed`);
    if (!["install", "rollback", "stay"].includes(p.action)) fail(`unknown action ${p.action}`);
    if (typeof p.reason !== "string") fail("it gives no reason");
    if (!Number.isInteger(p.sequence) || p.sequence < 0) fail("it has no sequence");
    if (p.sequence < lastSequence) fail(`sequence ${p.sequence} is older than ${lastSequence}, the last accepted (a replay)`);
    const issued = Date.parse(p.issued_at);
    const expires = Date.parse(p.expires_at);
    if (!/Z$|[+-]\d\d:\d\d$/.test(p.issued_at || "") || !/Z$|[+-]\d\d:\d\d$/.test(p.expires_at || "") || Number.isNaN(issued) || Number.isNaN(expires)) {
      fail("its issue or expiry time is missing or names no zone");
    }
    if (expires + CLOCK_SKEW_MS < now) {
      fail(`it expired at ${p.expires_at} (issued ${p.issued_at}); this browser's clock says ${new Date(now).toISOString()}: an old answer was replayed (or the clock is wrong)`);
    }
    const have = installed ? installed.version : null;
    if (p.action === "stay") {
      if ((p.version ?? null) !== have) fail(`it says stay on version ${p.version}, but this browser runs ${have}`);
      if (p.files && Object.keys(p.files).length) fail("a stay answer lists no files");
      return;
    }
    if (!Number.isInteger(p.version) || p.version < 1) fail("it names no version");
    if (!p.files || typeof p.files !== "object" || !p.files["manifest.json"]) fail("its files do not include manifest.json");
    if (have !== null && p.version < have) {
      if (p.action !== "rollback") fail(`v${p.version} is older than the installed v${have}, without a rollback`);
      if (!ROLLBACK_REASONS.includes(p.reason)) fail(`it rolls back to v${p.version} for reason ${p.reason}, not a rollback or pin recorded on the server`);
    }
  }

  async _recordAnswer(p, last) {
    const answer = {
      issued_at: p.issued_at,
      expires_at: p.expires_at,
      action: p.action,
      reason: p.reason,
      version: p.version ?? null,
      sequence: Math.max(p.sequence, last?.sequence ?? 0),
    };
    await store.put([["state", this.answerKey, answer]]);
    return answer;
  }

  async _download(url, expectSha, expectSize, name) {
    const resp = await this._fetch(url);
    if (!resp.ok) throw new OtaError(`downloading ${name}: HTTP ${resp.status}`);
    const total = Number(resp.headers.get("content-length")) || expectSize;
    const reader = resp.body.getReader();
    const chunks = [];
    let done = 0;
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      done += value.length;
      if (done > expectSize) {
        await reader.cancel();
        throw new OtaError(`${name}: the server sent more than the ${expectSize} bytes the signed manifest promises`);
      }
      chunks.push(value);
      this.onProgress({ file: name, done, total });
    }
    const bytes = new Uint8Array(done);
    let o = 0;
    for (const c of chunks) {
      bytes.set(c, o);
      o += c.length;
    }
    if (bytes.length !== expectSize) throw new OtaError(`${name}: got ${bytes.length} bytes, expected ${expectSize}`);
    if ((await sha256(bytes)) !== expectSha) throw new OtaError(`${name}: the download's sha256 does not match the signed manifest`);
    return bytes;
  }

  async _dataKey(p) {
    const resp = await this._fetch("/v1/ota/keys", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...this.fields(), model: p.model, version: p.version }),
    });
    const k = await readJson(resp);
    if (!resp.ok) throw new OtaError(`the server gave no data key for v${p.version} (HTTP ${resp.status}: ${k.error || ""})`);
    const raw = typeof k.key === "string" ? b64(k.key) : new Uint8Array();
    if (raw.length !== 32) throw new OtaError(`the server's data key for v${p.version} is malformed`);
    const key = await crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["decrypt"]);
    return { keyId: k.key_id, key };
  }

  /** Check for an update and install it. Returns {version, files, manifest, source, answer}. */
  async update() {
    const installed = await this.installed();
    const deviceId = await this.deviceId();
    const last = await this.lastSignedAnswer();
    const lastSequence = Math.max(last?.sequence ?? 0, installed?.sequence ?? 0);
    const resp = await this._fetch("/v1/ota/check", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...this.fields(), model: this.model, version: installed?.version ?? null, precision: this.precision, schema: SCHEMA }),
    });
    if (resp.status === 204) {
      // Unsigned "nothing new" (a server of schema 1, or someone in between): believed, but it does not
      // refresh the last signed answer, so the page can show how long it has been held back.
      if (!installed) throw new OtaError(`no release of ${this.model} on channel ${this.channel} for this device`);
      return { ...(await this.load("cache")), unsigned: true };
    }
    const envelope = await readJson(resp);
    if (!resp.ok) throw new OtaError(`update check failed (HTTP ${resp.status}: ${envelope.error || ""})`);
    const p = await this._verify(envelope);
    this._checkClaims(p, installed, deviceId, lastSequence);
    const answer = await this._recordAnswer(p, last);
    if (p.action === "stay") {
      if (!installed) throw new OtaError(`no release of ${this.model} on channel ${this.channel} for this device (${p.reason})`);
      return this.load("cache");
    }
    let dataKey = null;
    const entries = [];
    const files = {};
    const plain = {};
    for (const [name, f] of Object.entries(p.files)) {
      if (!/^[A-Za-z0-9._-]+$/.test(name) || name === "." || name === "..") throw new OtaError(`refusing file name ${JSON.stringify(name)}`);
      const held = installed?.files?.[name];
      if (held && held.sha256 === f.sha256) {
        files[name] = held; // unchanged since the installed version: keep its blob and key
        continue;
      }
      if (f.encrypted) {
        dataKey = dataKey || (await this._dataKey(p));
        const blob = await this._download(f.url, f.encrypted.sha256, f.encrypted.size, name);
        plain[name] = await decrypt(blob, dataKey.key, f.sha256, f.size, name);
        entries.push(["blobs", f.encrypted.sha256, blob]);
        files[name] = { sha256: f.sha256, size: f.size, blob: f.encrypted.sha256, key: `${p.model}:${p.version}` };
      } else {
        const bytes = await this._download(f.url, f.sha256, f.size, name);
        plain[name] = bytes;
        entries.push(["blobs", f.sha256, bytes]);
        files[name] = { sha256: f.sha256, size: f.size, blob: f.sha256, key: null };
      }
    }
    if (dataKey) entries.push(["keys", `${p.model}:${p.version}`, dataKey.key]);
    const state = { model: p.model, version: p.version, sequence: answer.sequence, precision: p.precision, files, installed_at: new Date().toISOString() };
    entries.push(["state", this.stateKey, state]);
    await store.put(entries); // one transaction: the new version appears whole or not at all
    await this._collect();
    return this.load("network", plain);
  }

  /** Remove blobs and keys no installed version (of any model this page installed) refers to. */
  async _collect() {
    await store.sweep();
  }

  /** The installed model from the cache, every file decrypted and checked against its sha256. */
  async load(source = "cache", plain = {}) {
    const state = await this.installed();
    if (!state) throw new OtaError(`no ${this.model} model is cached on this device`);
    const files = {};
    for (const [name, f] of Object.entries(state.files)) {
      if (plain[name]) {
        files[name] = plain[name];
        continue;
      }
      const blob = await store.get("blobs", f.blob);
      if (!blob) throw new OtaError(`the cached ${name} is missing`);
      if (f.key) {
        const key = await store.get("keys", f.key);
        if (!key) throw new OtaError(`the data key for the cached ${name} is missing`);
        files[name] = await decrypt(new Uint8Array(blob), key, f.sha256, f.size, name);
      } else {
        const bytes = new Uint8Array(blob);
        if ((await sha256(bytes)) !== f.sha256) throw new OtaError(`the cached ${name} is damaged`);
        files[name] = bytes;
      }
    }
    const manifest = JSON.parse(new TextDecoder().decode(files["manifest.json"]));
    return { version: state.version, precision: state.precision, files, manifest, source };
  }

  /** Forget the cached model (the next update downloads it again). */
  async forget() {
    await store.put([["state", this.stateKey, undefined]]);
    await this._collect();
  }

  /**
   * The model to run: the latest when the server answers, else the cached one. A damaged cache is
   * dropped and downloaded again when the server can be reached.
   */
  async getModel() {
    try {
      return await this.update();
    } catch (e) {
      if (!(e instanceof Offline)) {
        if (/damaged|missing|does not match/.test(e.message) && (await this.installed())) {
          await this.forget();
          return this.update();
        }
        throw e;
      }
      const cached = await this.load("cache").catch((err) => {
        throw new Offline(`${e.message}, and ${err.message}`);
      });
      return { ...cached, offline: e.message };
    }
  }
}

/**
 * An answer's JSON, read with a cap (MAX_ANSWER_BYTES): a server, or someone in between, cannot make the
 * page hold more than that for a check, a key or a message. {} when it is not JSON.
 */
async function readJson(resp) {
  const bytes = await readCapped(resp, MAX_ANSWER_BYTES, (declared) => new OtaError(
    `the server's answer is ${declared ? `${declared} bytes` : `over ${MAX_ANSWER_BYTES} bytes`}, more than any check, key or message; refusing it`));
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes));
    return v && typeof v === "object" ? v : {};
  } catch {
    return {};
  }
}

async function decrypt(blob, key, plainSha, plainSize, name) {
  if (String.fromCharCode(...blob.subarray(0, 4)) !== MAGIC) throw new OtaError(`${name}: not an encrypted Tandem blob`);
  let plain;
  try {
    plain = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: blob.subarray(4, 16), additionalData: new TextEncoder().encode(plainSha), tagLength: 128 },
        key,
        blob.subarray(16),
      ),
    );
  } catch {
    throw new OtaError(`${name}: the cached or downloaded file is damaged (decryption failed)`);
  }
  if (plain.length !== plainSize || (await sha256(plain)) !== plainSha) throw new OtaError(`${name}: the decrypted file does not match its sha256`);
  return plain;
}
