// A response's body read whole, but never past a cap: neither a declared Content-Length over it nor a
// stream that grows past it is held, so a server, or someone in between, cannot make the page hold more.

/**
 * The body's bytes; past ``cap`` the body is cancelled and ``tooLong(declared)`` thrown (``declared``: the
 * Content-Length that was over the cap, or null when the stream itself grew past it).
 */
export async function readCapped(resp, cap, tooLong) {
  const declared = Number(resp.headers.get("content-length"));
  if (declared > cap) {
    await resp.body?.cancel();
    throw tooLong(declared);
  }
  const chunks = [];
  let size = 0;
  if (resp.body) {
    const reader = resp.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > cap) {
        await reader.cancel();
        throw tooLong(null);
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let o = 0;
  for (const c of chunks) {
    bytes.set(c, o);
    o += c.length;
  }
  return bytes;
}
