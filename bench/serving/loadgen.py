"""A lean closed-loop HTTP/1.1 load generator: raw asyncio streams (uvloop where installed), one
keep-alive connection per virtual user, requests pre-encoded to the byte, loopback only.

    python bench/serving/loadgen.py --requests FILE.pkl --port 8000 --concurrency 16 --duration 10

FILE.pkl holds a list of complete HTTP requests (request line, headers and body as bytes), made once
by bench/serving.py: the client only writes bytes and reads the status line, the headers and the
body (Content-Length or chunked). Each user sends a request, waits for the whole answer, and sends
the next (closed loop), cycling through the requests from its own offset.

The run is bounded by time and by count: a warm-up (not recorded), then a measured phase that ends
at --duration seconds or --max-requests answers, whichever comes first. It prints "START" and "END"
on stdout as the measured phase begins and ends (bench/serving.py snapshots the server's metrics and
CPU then), and then one JSON line with the results, including this process's own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import pickle
import socket
import sys
import time

import numpy as np


def loopback(host: str) -> str:
    addr = socket.gethostbyname(host)
    if not ipaddress.ip_address(addr).is_loopback:
        raise SystemExit(f"loadgen: {host} ({addr}) is not a loopback address; this generator only targets this machine")
    return addr


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.first_error = ""
        self.recording = False
        self.stop = False
        self.count = 0

    def error(self, what: str) -> None:
        if self.recording:
            self.errors += 1
            if not self.first_error:
                self.first_error = what[:300]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = -1
    chunked = False
    keep = True
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
        elif k == b"connection" and b"close" in v.lower():
            keep = False
    if status in (204, 304) or 100 <= status < 200:  # answers that never have a body (RFC 9112 6.3)
        body = b""
    elif chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif length >= 0:
        body = await reader.readexactly(length)
    else:
        body = await reader.read()
        keep = False
    return status, body, keep


async def user(uid: int, host: str, port: int, requests: list[bytes], stats: Stats, max_requests: int) -> None:
    i = uid * 7919
    reader = writer = None
    while not stats.stop:
        req = requests[i % len(requests)]
        i += 1
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
                writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(req)
            status, body, keep = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            stats.error(f"{type(e).__name__}: {e}")
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
            continue
        dt = time.perf_counter() - t0
        if not keep:
            writer.close()
            reader = writer = None
        if not stats.recording or stats.stop:
            continue
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        if status != 200:
            stats.error(f"HTTP {status}: {body[:200]!r}")
        else:
            stats.latencies.append(dt)
        stats.count += 1
        if stats.count >= max_requests:
            stats.stop = True
    if writer is not None:
        writer.close()


async def main_async(args: argparse.Namespace) -> dict:
    with open(args.requests, "rb") as f:
        requests: list[bytes] = pickle.load(f)
    host = loopback(args.host)
    stats = Stats()
    tasks = [asyncio.create_task(user(u, host, args.port, requests, stats, args.max_requests))
             for u in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    stats.latencies.clear()
    print("START", flush=True)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    stats.recording = True
    deadline = wall0 + args.duration
    while not stats.stop and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)
    stats.stop = True
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    print("END", flush=True)
    # Let in-flight requests finish (they are not recorded) so the server sees no reset connections.
    await asyncio.wait(tasks, timeout=args.drain)
    for t in tasks:
        t.cancel()
    lat = np.array(stats.latencies) * 1000
    ok = len(lat)
    return {
        "concurrency": args.concurrency,
        "requests": stats.count,
        "ok": ok,
        "errors": stats.errors,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "first_error": stats.first_error,
        "wall_s": round(wall, 3),
        "rps": round(ok / wall, 2) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if ok else None,
        "p90_ms": round(float(np.percentile(lat, 90)), 3) if ok else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if ok else None,
        "max_ms": round(float(lat.max()), 3) if ok else None,
        "mean_ms": round(float(lat.mean()), 3) if ok else None,
        "client_cpu_s": round(cpu, 3),
        "client_cpu_share": round(cpu / wall, 4) if wall > 0 else None,
        "client_cpu_ms_per_req": round(cpu * 1000 / max(1, stats.count), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", required=True, help="pickled list of complete HTTP requests (bytes)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds at most")
    p.add_argument("--max-requests", type=int, default=100_000, help="measured answers at most")
    p.add_argument("--warmup", type=float, default=1.5, help="seconds of load before measuring")
    p.add_argument("--drain", type=float, default=5.0, help="seconds to let in-flight requests end")
    args = p.parse_args()
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(main_async(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
