// The browser's model store: IndexedDB holds the encrypted files as the server sent them and the
// data keys as non-extractable WebCrypto keys (usable to decrypt, never readable by script), so a
// cached model is no easier to copy out of the browser than out of the Python SDK's key store.

const DB = "tandem";
const STORES = ["state", "blobs", "keys"];

let opening = null;

function db() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB, 1);
      req.onupgradeneeded = () => STORES.forEach((s) => req.result.objectStoreNames.contains(s) || req.result.createObjectStore(s));
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  return opening;
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  });
}

export async function get(store, key) {
  const tx = (await db()).transaction(store);
  const req = tx.objectStore(store).get(key);
  await done(tx);
  return req.result;
}

/** Writes several stores in one transaction: all of it lands, or none (an install is atomic). */
export async function put(entries) {
  const stores = [...new Set(entries.map(([s]) => s))];
  const tx = (await db()).transaction(stores, "readwrite");
  for (const [store, key, value] of entries) {
    if (value === undefined) tx.objectStore(store).delete(key);
    else tx.objectStore(store).put(value, key);
  }
  await done(tx);
}

export async function keys(store) {
  const tx = (await db()).transaction(store);
  const req = tx.objectStore(store).getAllKeys();
  await done(tx);
  return req.result;
}

export async function clear() {
  const tx = (await db()).transaction(STORES, "readwrite");
  STORES.forEach((s) => tx.objectStore(s).clear());
  await done(tx);
}

/**
 * Deletes the blobs and data keys that no installed model's state refers to, in one transaction:
 * the page installs several models (celebmatch, deep-art effects), and an install that lands while
 * another model's sweep runs cannot lose its files (IndexedDB runs the two one after the other).
 */
export async function sweep() {
  const tx = (await db()).transaction(STORES, "readwrite");
  const states = tx.objectStore("state").getAll();
  const blobs = tx.objectStore("blobs").getAllKeys();
  const keys = tx.objectStore("keys").getAllKeys();
  keys.onsuccess = () => {
    // Requests in a transaction complete in order: the states and blob names are read by now.
    const files = states.result.filter((s) => s && typeof s.files === "object").flatMap((s) => Object.values(s.files));
    const liveBlobs = new Set(files.map((f) => f.blob));
    const liveKeys = new Set(files.map((f) => f.key).filter(Boolean));
    for (const k of blobs.result) if (!liveBlobs.has(k)) tx.objectStore("blobs").delete(k);
    for (const k of keys.result) if (!liveKeys.has(k)) tx.objectStore("keys").delete(k);
  };
  await done(tx);
}
