// Over-the-air model delivery in the browser: the wire contract of docs/ota.md, as the Python SDK
// (tandem.device.ModelUpdater) follows it: check, verify the Ed25519-signed payload and its claims,
// download, verify hashes, fetch the data key, decrypt (AES-256-GCM), cache for offline use.

import * as store from "./store.js";

const SCHEMA = 1;
const MAGIC = "TDE1";

export class OtaError extends Error {}
export class Offline extends OtaError {}

const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
export const sha256 = async (bytes) => hex(await crypto.subtle.digest("SHA-256", bytes));

export class ModelUpdater {
  /** base: the server's URL ("" for this page's own); deviceKey: an API key of scope device. */
  constructor({ base = "", deviceKey, model, channel = "production", appVersion = "1.0.0", precision = "fp32", onProgress }) {
    this.base = base;
    this.deviceKey = deviceKey;
    this.model = model;
    this.channel = channel;
    this.appVersion = appVersion;
    this.precision = precision;
    this.onProgress = onProgress || (() => {});
    this.stateKey = `${model}:${channel}`;
  }

  async _fetch(path, init = {}) {
    if (!path.startsWith("/v1/ota/")) throw new OtaError(`refusing to fetch ${path}: OTA URLs are paths on this server`);
    let resp;
    try {
      resp = await fetch(this.base + path, {
        ...init,
        headers: { ...(init.headers || {}), authorization: `Bearer ${this.deviceKey}` },
        cache: "no-store",
      });
    } catch (e) {
      throw new Offline(`cannot reach the server (${e.message})`);
    }
    if (resp.status === 401 || resp.status === 403) {
      const body = await resp.json().catch(() => ({}));
      throw new OtaError(`the server refused the device key (${resp.status}: ${body.error || "no reason given"}); check the key`);
    }
    if (resp.status >= 500) throw new Offline(`the server answered ${resp.status}`);
    return resp;
  }

  async deviceId() {
    let id = await store.get("state", "device_id");
    if (!id) {
      id = crypto.randomUUID();
      await store.put([["state", "device_id", id]]);
    }
    return id;
  }

  async fields() {
    return { device_id: await this.deviceId(), channel: this.channel, platform: "web", app_version: this.appVersion };
  }

  /** The trusted signing keys: the server's list, fetched once and kept (trust on first use). */
  async trustedKeys(refresh = false) {
    let keys = refresh ? null : await store.get("state", "signing_keys");
    if (!keys) {
      const resp = await this._fetch("/v1/ota/signing-keys");
      if (!resp.ok) throw new OtaError(`could not list the signing keys (HTTP ${resp.status})`);
      keys = (await resp.json()).keys;
      await store.put([["state", "signing_keys", keys]]);
    }
    return keys;
  }

  async installed() {
    return (await store.get("state", this.stateKey)) || null;
  }

  async _verify(envelope) {
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

  _checkClaims(p, installed, deviceId) {
    const fail = (why) => {
      throw new OtaError(`refusing the update: ${why}`);
    };
    if (p.schema !== SCHEMA) fail(`payload schema ${p.schema} is not ${SCHEMA}`);
    if (p.model !== this.model) fail(`it is for model ${p.model}, not ${this.model}`);
    if (p.channel !== this.channel) fail(`it is for channel ${p.channel}, not ${this.channel}`);
    if (p.device_id !== deviceId) fail("it is for another device");
    if (installed) {
      if (p.sequence < installed.sequence) fail(`sequence ${p.sequence} is older than ${installed.sequence} (a replay)`);
      if (p.version < installed.version && p.action !== "rollback") fail(`v${p.version} is older than the installed v${installed.version}`);
    }
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
      chunks.push(value);
      done += value.length;
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
      body: JSON.stringify({ ...(await this.fields()), model: p.model, version: p.version }),
    });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      throw new OtaError(`the server gave no data key for v${p.version} (HTTP ${resp.status}: ${body.error || ""})`);
    }
    const k = await resp.json();
    const key = await crypto.subtle.importKey("raw", b64(k.key), { name: "AES-GCM" }, false, ["decrypt"]);
    return { keyId: k.key_id, key };
  }

  /** Check for an update and install it. Returns {version, files, manifest, source}. */
  async update() {
    const installed = await this.installed();
    const deviceId = await this.deviceId();
    const resp = await this._fetch("/v1/ota/check", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...(await this.fields()), model: this.model, version: installed?.version ?? null, precision: this.precision }),
    });
    if (resp.status === 204) {
      if (!installed) throw new OtaError(`no release of ${this.model} on channel ${this.channel} for this device`);
      return this.load("cache");
    }
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      throw new OtaError(`update check failed (HTTP ${resp.status}: ${body.error || ""})`);
    }
    const p = await this._verify(await resp.json());
    this._checkClaims(p, installed, deviceId);
    let dataKey = null;
    const entries = [];
    const files = {};
    const plain = {};
    for (const [name, f] of Object.entries(p.files)) {
      if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new OtaError(`refusing file name ${JSON.stringify(name)}`);
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
    const state = { model: p.model, version: p.version, sequence: p.sequence, precision: p.precision, files, installed_at: new Date().toISOString() };
    entries.push(["state", this.stateKey, state]);
    await store.put(entries); // one transaction: the new version appears whole or not at all
    await this._collect(state);
    return this.load("network", plain);
  }

  /** Remove blobs and keys no installed version refers to. */
  async _collect(state) {
    const liveBlobs = new Set(Object.values(state.files).map((f) => f.blob));
    const liveKeys = new Set(Object.values(state.files).map((f) => f.key).filter(Boolean));
    const drop = [];
    for (const k of await store.keys("blobs")) if (!liveBlobs.has(k)) drop.push(["blobs", k, undefined]);
    for (const k of await store.keys("keys")) if (k.startsWith(`${this.model}:`) && !liveKeys.has(k)) drop.push(["keys", k, undefined]);
    if (drop.length) await store.put(drop);
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
    await this._collect({ files: {} });
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
