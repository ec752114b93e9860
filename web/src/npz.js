// Reads numpy's .npz (a zip of .npy files): what the celebmatch gallery is stored as.

function u16(v, o) {
  return v.getUint16(o, true);
}
function u32(v, o) {
  return v.getUint32(o, true);
}

async function inflateRaw(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The zip's entries as {name: Uint8Array}, found through the central directory. */
export async function unzip(bytes) {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 65535); i--) {
    if (u32(v, i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error("not a zip file (no end of central directory)");
  const count = u16(v, eocd + 10);
  let p = u32(v, eocd + 16);
  const out = {};
  for (let n = 0; n < count; n++) {
    if (u32(v, p) !== 0x02014b50) throw new Error("corrupt zip central directory");
    const method = u16(v, p + 10);
    let compSize = u32(v, p + 20);
    const nameLen = u16(v, p + 28);
    const extraLen = u16(v, p + 30);
    const commentLen = u16(v, p + 32);
    let local = u32(v, p + 42);
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLen));
    // ZIP64: sizes and offset too large for 32 bits live in extra field 0x0001, in this order.
    let e = p + 46 + nameLen;
    const end = e + extraLen;
    while (e + 4 <= end) {
      const id = u16(v, e);
      const len = u16(v, e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        const big = () => {
          const x = Number(v.getBigUint64(q, true));
          q += 8;
          return x;
        };
        if (u32(v, p + 24) === 0xffffffff) big();
        if (compSize === 0xffffffff) compSize = big();
        if (local === 0xffffffff) local = big();
      }
      e += 4 + len;
    }
    const start = local + 30 + u16(v, local + 26) + u16(v, local + 28);
    const data = bytes.subarray(start, start + compSize);
    if (method === 0) out[name] = data;
    else if (method === 8) out[name] = await inflateRaw(data);
    else throw new Error(`zip entry ${name}: unsupported compression method ${method}`);
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/** One .npy array as {shape, dtype, data}; float32/float64/int64/unicode, little-endian, C order. */
export function readNpy(bytes) {
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.subarray(1, 6)) !== "NUMPY") throw new Error("not a .npy array");
  const major = bytes[6];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? u16(v, 8) : u32(v, 8);
  const start = major === 1 ? 10 + headerLen : 12 + headerLen;
  const header = new TextDecoder().decode(bytes.subarray(major === 1 ? 10 : 12, start));
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error("Fortran-ordered arrays are not supported");
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const body = bytes.slice(start); // a copy: typed arrays need aligned offsets
  if (descr === "<f4") return { shape, dtype: "float32", data: new Float32Array(body.buffer, 0, count) };
  if (descr === "<f8") return { shape, dtype: "float64", data: new Float64Array(body.buffer, 0, count) };
  if (descr === "<i8") return { shape, dtype: "int64", data: Array.from(new BigInt64Array(body.buffer, 0, count), Number) };
  const m = /^<U(\d+)$/.exec(descr);
  if (m) {
    const width = Number(m[1]);
    const cps = new Uint32Array(body.buffer, 0, count * width);
    const data = [];
    for (let i = 0; i < count; i++) {
      let s = "";
      for (let j = 0; j < width; j++) {
        const c = cps[i * width + j];
        if (c === 0) break;
        s += String.fromCodePoint(c);
      }
      data.push(s);
    }
    return { shape, dtype: "str", data };
  }
  throw new Error(`unsupported .npy dtype ${descr}`);
}

export async function readNpz(bytes) {
  const entries = await unzip(bytes);
  const arrays = {};
  for (const [name, data] of Object.entries(entries)) arrays[name.replace(/\.npy$/, "")] = readNpy(data);
  return arrays;
}
