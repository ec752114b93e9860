"""Soak benchmark (issue 8): a real `tandem serve` driven at ~80% of its measured capacity for a long
time with a mix of requests, watching errors, p99 and memory.

    make bench-soak        (or: .venv/bin/python bench/soak.py [--minutes 10] [--bundle DIR] [--load 0.8])

1. Sets up a fresh TANDEM_HOME (SQLite) under bench/work/soak: the bundle pushed (a tiny real ONNX
   bundle made like the server tests' unless --bundle names one, e.g. tandem-demo/bundle), alias
   production -> it, released to devices on production, a predict key and a device key; then starts
   `tandem serve` on 127.0.0.1 (rate limits lifted: the soak measures the server, not the limiter).
2. Capacity: closed loop (each connection sends its next request when the answer came) with the
   request mix at concurrency 1, 2, 4 … 32 (see capacity()); the best requests/s is the capacity
   of this machine for this mix, the load generator included (both share the CPUs).
3. Warm-up, then the soak: open loop, paced at --load x capacity (requests leave on a fixed schedule
   whether or not earlier ones are answered; latency counts from the scheduled instant, so a stall
   shows up in p99 instead of slowing the load down), for --minutes.

The mix: OIP v2 JSON infer, OIP v2 binary-tensor infer, the image endpoint (real LFW JPEGs, or
synthetic JPEGs where LFW is missing; POST /v1/apps/classify/{model}:predict) and OTA update checks
with the device key (new devices, answered with a signed offer, and devices already current, 204).
A 503 with Retry-After is a shed request: the server turned it away at once at a budget
(TANDEM_MAX_QUEUE_MS, TANDEM_MAX_IN_FLIGHT[_OTA], the decode queue) so that the others stay on time,
and told the client when to retry; it is counted apart (``shed``), not as an error. Any other answer
than 2xx, and any broken connection or timeout, is an error. Latency percentiles are of the answered
(2xx) requests.

Recorded: requests, errors and shed requests (per kind), p50/p99 per window (a minute; 10 s when the soak is
shorter than 2 minutes) and p99 drift (last window's p99 over the first's), the server's RSS (the
`tandem serve` process and all its children, from /proc) every --rss-every seconds: start (after the
warm-up), end, growth = end/start - 1. Targets: 0 errors, RSS growth <= 10%, p99 drift <= 1.5 (issue 21;
also at the top of soak.json as ``p99_drift``).

Writes bench/results/soak.json and bench/results/soak.png (p99 and RSS over time), and merges
soak_requests, soak_errors, rss_growth, soak_p99_drift, soak_minutes and soak_rps into
bench/results/hardening.json (bench/hardening.py keeps them when it rewrites that file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tandem import atomic
from tandem.testing.served import Served, serve

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
WORK = HERE / "work" / "soak"
KINDS = ("json", "binary", "image", "ota")
WEIGHTS = {"json": 3, "binary": 3, "image": 2, "ota": 2}  # out of 10 requests
TARGET_RSS_GROWTH = 0.10
TARGET_P99_DRIFT = 1.5  # issue 21: the last minute's p99 within 1.5x the first's
REQUEST_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 256  # the open loop's connection pool; a request waits for one beyond that
console = Console(width=110)


# --- the requests --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """The mix, pre-encoded to the byte (HTTP/1.1, keep-alive): request i is ``requests[i % len]``."""

    host: str
    port: int
    requests: list[tuple[int, bytes]]  # (index into KINDS, the request's bytes)


def _http(method: str, path: str, host: str, port: int, body: bytes, ctype: str, headers: dict[str, str]) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def oip_json(name: str, pixels: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": "UINT8", "shape": [1, *pixels.shape],
                                   "data": pixels.ravel().tolist()}]}, separators=(",", ":")).encode()


def oip_binary(name: str, pixels: np.ndarray) -> tuple[bytes, int]:
    raw = np.ascontiguousarray(pixels, np.uint8).tobytes()
    header = json.dumps({"inputs": [{"name": name, "datatype": "UINT8", "shape": [1, *pixels.shape],
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}, separators=(",", ":")).encode()
    return header + raw, len(header)


def build_plan(url: str, model: str, input_name: str, predict_key: str, device_key: str, version: int,
               jpegs: list[bytes], pixels: list[np.ndarray], n: int = 500, seed: int = 0) -> Plan:
    """``n`` requests in a shuffled order with the mix's weights; OTA checks from distinct devices,
    half new (offered ``version``, signed), half already on it (204)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    port_n = int(port)
    predict = {"Authorization": f"Bearer {predict_key}"}
    device = {"Authorization": f"Bearer {device_key}"}
    infer = f"/v2/models/{model}/infer"
    rng = np.random.default_rng(seed)
    cycle = [k for k in KINDS for _ in range(WEIGHTS[k])]
    kinds = [cycle[i % len(cycle)] for i in range(n)]
    rng.shuffle(kinds)
    out = []
    for i, kind in enumerate(kinds):
        px, jpeg = pixels[i % len(pixels)], jpegs[i % len(jpegs)]
        if kind == "json":
            raw = _http("POST", infer, host, port_n, oip_json(input_name, px), "application/json", predict)
        elif kind == "binary":
            body, hlen = oip_binary(input_name, px)
            raw = _http("POST", infer, host, port_n, body, "application/octet-stream",
                        {**predict, "Inference-Header-Content-Length": str(hlen)})
        elif kind == "image":
            raw = _http("POST", f"/v1/apps/classify/{model}:predict", host, port_n, jpeg, "image/jpeg", predict)
        else:
            check = {"model": model, "device_id": f"soak-{i:05d}", "version": version if i % 2 else None,
                     "platform": "android", "os_version": "14", "app_version": "2.4.0", "ram_mb": 4096}
            raw = _http("POST", "/v1/ota/check", host, port_n, json.dumps(check).encode(), "application/json",
                        device)
        out.append((KINDS.index(kind), raw))
    return Plan(host, port_n, out)


# --- the load generator: raw asyncio HTTP/1.1, cheap enough to share 2 cores with the server ----

def _bench_script(name: str):  # type: ignore[no-untyped-def]
    """Another bench script as a module (bench/ is no package: loaded by path, not through sys.path)."""
    spec = importlib.util.spec_from_file_location(f"tandem_bench_{name.replace('/', '_')}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


read_response = _bench_script("serving/loadgen").read_response  # bench/serving/loadgen.py's response reader
BROKEN = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError, TimeoutError)


SHED = "shed"  # Connection.send's ``what`` for a 503 with Retry-After


class _HeadTap:
    """A StreamReader that keeps the response head read_response reads first (it returns no headers)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.head = b""

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        data = await self.reader.readuntil(separator)
        if not self.head:
            self.head = data
        return data

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(n)


class Connection:
    """One load worker's keep-alive connection: opened on first use, and again after the server
    closed it or it broke."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, raw: bytes) -> tuple[int | None, str]:
        """(status, "") for an answer; (None, what broke) for a broken connection or a timeout; (503,
        SHED) for a 503 with Retry-After."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if self._streams is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._streams = _HeadTap(reader), writer
                tap, writer = self._streams
                tap.head = b""
                writer.write(raw)
                status, _, keep = await read_response(tap)
        except BROKEN as e:
            self.close()
            return None, type(e).__name__
        if not keep:
            self.close()
        return status, SHED if status == 503 and b"\r\nretry-after:" in tap.head.lower() else ""

    def close(self) -> None:
        if self._streams is not None:
            with contextlib.suppress(Exception):
                self._streams[1].close()
            self._streams = None


@dataclass
class Record:
    """Every request of a run: when it was due (s from the start), its kind, latency and outcome."""

    due: list[float] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    shed: list[bool] = field(default_factory=list)  # a 503 with Retry-After: turned away, not an error
    failures: dict[str, int] = field(default_factory=dict)  # "kind: what" -> count (errors only)

    def add(self, due: float, kind: int, latency: float, status: int | None, what: str = "") -> None:
        ok = status is not None and 200 <= status < 300
        shed = what == SHED
        self.due.append(due)
        self.kind.append(kind)
        self.latency.append(latency)
        self.ok.append(ok)
        self.shed.append(shed)
        if not ok and not shed:
            key = f"{KINDS[kind]}: {what or status}"
            self.failures[key] = self.failures.get(key, 0) + 1

    @property
    def shed_count(self) -> int:
        return sum(self.shed)

    @property
    def errors(self) -> int:
        return len(self.ok) - sum(self.ok) - self.shed_count


async def _open_loop(plan: Plan, rate: float, seconds: float, rec: Record,
                     tick: Callable[[float, Record], None] | None) -> None:
    """A pacer puts each request on a queue at its due instant; ``MAX_CONNECTIONS`` keep-alive
    connections (opened as the backlog calls for them) take them off. Cheaper per request than a task
    each, which matters when the load generator shares the CPUs with the server."""
    queue: asyncio.Queue[tuple[int, bytes, float] | None] = asyncio.Queue()
    workers: list[asyncio.Task] = []
    idle = {"n": 0}
    t0 = time.perf_counter()

    async def worker() -> None:
        conn = Connection(plan.host, plan.port)
        try:
            while True:
                idle["n"] += 1
                item = await queue.get()
                idle["n"] -= 1
                if item is None:
                    return
                kind, raw, due = item
                status, what = await conn.send(raw)
                rec.add(due - t0, kind, time.perf_counter() - due, status, what)
        finally:
            conn.close()

    n = int(rate * seconds)
    i, last_tick = 0, t0
    try:
        while i < n:
            now = time.perf_counter()
            while i < n and t0 + i / rate <= now:  # everything due by now leaves now, stamped with its due time
                kind, raw = plan.requests[i % len(plan.requests)]
                queue.put_nowait((kind, raw, t0 + i / rate))
                i += 1
            # A connection more while requests wait and every connection is busy.
            if queue.qsize() > idle["n"] and len(workers) < MAX_CONNECTIONS:
                workers.append(asyncio.create_task(worker()))
            if tick is not None and now - last_tick >= 0.5:
                tick(now - t0, rec)
                last_tick = now
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        if tick is not None:
            tick(time.perf_counter() - t0, rec)
    finally:
        for w in workers:
            w.cancel()


def open_loop(plan: Plan, rate: float, seconds: float,
              tick: Callable[[float, Record], None] | None = None) -> Record:
    """The soak driver's core: ``rate`` requests/s of the plan's mix for ``seconds``, paced."""
    rec = Record()
    asyncio.run(_open_loop(plan, rate, seconds, rec, tick))
    return rec


async def _closed_loop(plan: Plan, concurrency: int, seconds: float, rec: Record) -> None:
    end = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def worker(w: int) -> None:
        conn = Connection(plan.host, plan.port)
        try:
            while time.perf_counter() < end:
                kind, raw = plan.requests[(next(counter) * 7 + w) % len(plan.requests)]
                t = time.perf_counter()
                status, what = await conn.send(raw)
                rec.add(t, kind, time.perf_counter() - t, status, what)
        finally:
            conn.close()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))


def closed_loop(plan: Plan, concurrency: int, seconds: float) -> Record:
    rec = Record()
    asyncio.run(_closed_loop(plan, concurrency, seconds, rec))
    return rec


def capacity(plan: Plan, step_s: float, levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32)) -> tuple[float, list[dict]]:
    """The most requests/s the server answered at any concurrency of a short rising ramp.

    The whole ramp runs: throughput is not monotonic in concurrency (a lone request runs on every
    core, so 2 can be slower than 1, and batching makes 16 faster than both), and the top levels
    fill the server's batches, so its memory (ONNX Runtime's arena grows with the largest batch
    seen) has reached its working size before the soak reads the starting RSS. A first 10-minute
    soak that stopped its ramp at 2 saw a single 26 MB step at its 92nd second and nothing after (its
    RSS started at 272 MB; after the whole ramp the next one's started at 313 MB)."""
    best, steps = 0.0, []
    for c in levels:
        rec = closed_loop(plan, c, step_s)
        rps = sum(rec.ok) / step_s
        lat = np.array(rec.latency) * 1e3
        steps.append({"concurrency": c, "rps": round(rps, 1), "errors": rec.errors, "shed": rec.shed_count,
                      "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
                      "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None})
        console.print(f"  closed loop, concurrency {c:>2}: {rps:7.1f} requests/s, p99 {steps[-1]['p99_ms']} ms, "
                      f"{rec.errors} errors, {rec.shed_count} shed")
        best = max(best, rps)
    return best, steps


# --- the server's memory ------------------------------------------------------------------------

def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _over_tree(pid: int, read: Callable[[int], float]) -> float:
    """``read`` summed over ``pid`` and all its descendants (workers, helpers); a process that ends
    meanwhile counts nothing."""
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += read(p)
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its descendants so far, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")

    def read(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    return _over_tree(pid, read)


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, from /proc (Linux)."""
    page = os.sysconf("SC_PAGE_SIZE")
    return int(_over_tree(pid, lambda p: int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page))


class RssSampler(threading.Thread):
    """Samples (seconds since ``t0``, RSS bytes) every ``every`` seconds until stopped."""

    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self.t0 = time.perf_counter()
        self._done = threading.Event()

    def restart_clock(self) -> None:
        self.samples.clear()
        self.t0 = time.perf_counter()
        self.samples.append((0.0, rss_bytes(self.pid)))

    def run(self) -> None:
        while not self._done.wait(self.every):
            self.samples.append((time.perf_counter() - self.t0, rss_bytes(self.pid)))

    def stop(self) -> None:
        self._done.set()
        self.join(5)
        self.samples.append((time.perf_counter() - self.t0, rss_bytes(self.pid)))


# --- figures --------------------------------------------------------------------------------------

def _pct(lat: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(lat, q)) * 1e3, 2) if len(lat) else None


def summarise(rec: Record, seconds: float, window_s: float) -> dict:
    """Requests, errors, shed requests and latency overall, per kind and per window of ``window_s`` (by due
    time). ``errors`` leaves the shed requests out (see the module's doc)."""
    due, lat, ok, kind = (np.array(rec.due), np.array(rec.latency), np.array(rec.ok, bool),
                          np.array(rec.kind, int))
    shed = np.array(rec.shed, bool)
    bad = ~ok & ~shed
    n_windows = max(1, round(seconds / window_s))
    windows = []
    for w in range(n_windows):
        lo, hi = w * window_s, (w + 1) * window_s if w < n_windows - 1 else float("inf")
        m = (due >= lo) & (due < hi)
        windows.append({"start_s": round(lo, 1), "requests": int(m.sum()), "errors": int((m & bad).sum()),
                        "shed": int((m & shed).sum()),
                        "rps": round(float(m.sum()) / min(window_s, max(seconds - lo, 1e-9)), 1),
                        "p50_ms": _pct(lat[m & ok], 50), "p99_ms": _pct(lat[m & ok], 99)})
    first, last = windows[0]["p99_ms"], windows[-1]["p99_ms"]
    by_kind = {}
    for i, k in enumerate(KINDS):
        m = kind == i
        by_kind[k] = {"requests": int(m.sum()), "errors": int((m & bad).sum()), "shed": int((m & shed).sum()),
                      "p50_ms": _pct(lat[m & ok], 50), "p99_ms": _pct(lat[m & ok], 99)}
    finished = float((due + lat).max()) if len(due) else seconds  # the last answer, from the start
    return {"requests": len(rec.ok), "errors": rec.errors, "shed": rec.shed_count, "failures": rec.failures,
            "achieved_rps": round(len(rec.ok) / max(finished, seconds), 1), "p50_ms": _pct(lat[ok], 50), "p99_ms": _pct(lat[ok], 99),
            "window_s": window_s, "windows": windows, "by_kind": by_kind,
            "p99_drift": round(last / first, 3) if first and last else None}


def rss_figures(samples: list[tuple[float, int]]) -> dict:
    mb = [b / 2**20 for _, b in samples]
    start, end = mb[0], mb[-1]
    return {"start_mb": round(start, 1), "end_mb": round(end, 1), "max_mb": round(max(mb), 1),
            "growth": round(end / start - 1, 4), "samples": [[round(t, 1), round(m, 1)] for (t, _), m in
                                                              zip(samples, mb, strict=True)]}


# --- setting up ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prepared:
    home: Path
    model: str
    input_name: str
    version: int
    predict_key: str
    device_key: str
    bundle: Path


def registry_settings(home: Path):  # a tandem.settings.Settings, imported late (start-up time)
    from tandem.settings import Settings

    return Settings(home=home, database_url=None, redis_url=None, ota_master_key=None)


def prepare(home: Path, bundle: Path | None) -> Prepared:
    """A registry at ``home`` with the bundle pushed, production -> it, released to devices, and keys."""
    from tandem.bundle import Bundle
    from tandem.registry.ota import Ota
    from tandem.registry.registry import Registry

    if bundle is None:
        from tandem.testing.bundles import make_bundle

        shutil.rmtree(home.parent / "bundle", ignore_errors=True)
        bundle = make_bundle(home.parent / "bundle", None, name="faces", seed=1)
    manifest = Bundle.load(bundle).manifest
    settings = registry_settings(home)
    with Registry.open(settings) as reg:
        version = reg.push(bundle).version
        reg.set_alias(manifest.name, "production", version)
        Ota(reg, settings).releases.release(manifest.name, version, "production")
        predict = reg.create_key("predict", "soak")[0]
        # OTA checks from thousands of made-up device ids: an admin key may answer for any device_id (a
        # registered device only for its own), and takes the same check path.
        device = reg.create_key("admin", "soak devices")[0]
    return Prepared(home, manifest.name, manifest.inputs[0].name, version, predict, device, bundle)


def photos(bundle: Path, n: int = 16) -> tuple[list[bytes], list[np.ndarray]]:
    """``n`` JPEGs (real LFW photos where TANDEM_DATA_HOME has them) and the model inputs made of them."""
    from PIL import Image

    from tandem.bundle import Bundle
    from tandem.bundle.preprocess import decode_image, to_input

    lfw = Path(os.environ.get("TANDEM_DATA_HOME", ROOT.parent / "shared" / "datasets")) / "lfw_home" / "lfw_funneled"
    files = sorted(lfw.glob("*/*.jpg"))
    if files:
        jpegs = [files[i].read_bytes() for i in range(0, len(files), max(1, len(files) // n))][:n]
    else:
        rng = np.random.default_rng(0)
        jpegs = []
        for _ in range(n):
            buf = BytesIO()
            small = rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)
            Image.fromarray(small).resize((250, 250), Image.BILINEAR).save(buf, "JPEG", quality=90)
            jpegs.append(buf.getvalue())
    spec = Bundle.load(bundle).manifest.preprocessing
    return jpegs, [to_input(decode_image(j), spec) for j in jpegs]


def start_server(home: Path, workers: int, log: Path) -> Served:
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_DATABASE_URL": "", "TANDEM_REDIS_URL": "",
           "TANDEM_ACCESS_LOG": "0", "TANDEM_RATE_LIMIT_PER_S": "1000000", "TANDEM_RATE_LIMIT_BURST": "1000000",
           "TANDEM_DEVICE_RATE_LIMIT_PER_S": "1000000", "TANDEM_DEVICE_RATE_LIMIT_BURST": "1000000"}
    env.pop("TANDEM_OTA_MASTER_KEY", None)
    return serve("--host", "127.0.0.1", "--workers", str(workers), env=env, log=log, cwd=ROOT)


def sanity(plan: Plan) -> None:
    """One request of each kind, answered 2xx, before any load: a broken setup is not a soak finding."""

    async def each() -> list[str]:
        conn = Connection(plan.host, plan.port)
        try:
            bad = []
            for k, name in enumerate(KINDS):
                status, what = await conn.send(next(raw for kind, raw in plan.requests if kind == k))
                if status is None or not 200 <= status < 300:
                    bad.append(f"{name}: {what or f'HTTP {status}'}")
            return bad
        finally:
            conn.close()

    bad = asyncio.run(each())
    if bad:
        raise RuntimeError(f"requests failed before the soak (see bench/work/soak/server.log): {bad}")


# --- output ---------------------------------------------------------------------------------------

def print_table(res: dict) -> None:
    s = res["soak"]
    share = (f" ({res['load']:.0%} of the measured {res['capacity_rps']:.0f}/s)" if res["capacity_rps"]
             else " (--rate: capacity not measured)")
    t = Table(title=f"soak: {res['minutes']:g} min at {res['target_rps']:.0f} requests/s{share}")
    for col in ("window", "requests", "errors", "shed", "requests/s", "p50 ms", "p99 ms"):
        t.add_column(col, justify="right")
    for w in s["windows"]:
        t.add_row(f"{w['start_s']:.0f} s", f"{w['requests']:,}", str(w["errors"]), str(w["shed"]), f"{w['rps']:.1f}",
                  str(w["p50_ms"]), str(w["p99_ms"]), style="red" if w["errors"] else None)
    console.print(t)
    k = Table(title="per kind")
    for col in ("kind", "requests", "errors", "shed", "p50 ms", "p99 ms"):
        k.add_column(col, justify="right")
    for name, v in s["by_kind"].items():
        k.add_row(name, f"{v['requests']:,}", str(v["errors"]), str(v["shed"]), str(v["p50_ms"]), str(v["p99_ms"]))
    console.print(k)
    r = res["rss"]
    f = Table(title="figures")
    f.add_column("figure")
    f.add_column("value", justify="right")
    f.add_column("target")
    rows = [("requests", f"{s['requests']:,}", ""), ("errors", str(s["errors"]), "0"),
            ("shed (503 with Retry-After)", f"{s['shed']:,} ({s['shed'] / max(s['requests'], 1):.2%})", ""),
            ("requests/s achieved", f"{s['achieved_rps']:.1f}", f"{res['target_rps']:.1f}"),
            ("p50 / p99 ms", f"{s['p50_ms']} / {s['p99_ms']}", ""),
            (f"p99 drift (last / first {s['window_s']:g} s window)", str(s["p99_drift"]), f"<= {TARGET_P99_DRIFT:g}"),
            ("server RSS start / end / max MB", f"{r['start_mb']} / {r['end_mb']} / {r['max_mb']}", ""),
            ("RSS growth", f"{r['growth']:+.1%}", f"<= {TARGET_RSS_GROWTH:.0%}"),
            ("cores used: server / load generator", f"{res['cpu_cores_used']['server']} / "
                                                     f"{res['cpu_cores_used']['load_generator']}",
             f"of {os.cpu_count()}")]
    for name, value, target in rows:
        f.add_row(name, value, target)
    console.print(f)
    if s["failures"]:
        console.print("[red]failures:[/]", s["failures"])


def plot(res: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("[yellow]matplotlib is not installed: no plot[/]")
        return False
    s, r = res["soak"], res["rss"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = [(w["start_s"] + s["window_s"] / 2) / 60 for w in s["windows"]]
    ax.plot(xs, [w["p99_ms"] for w in s["windows"]], "o-", color="tab:red", label="p99")
    ax.plot(xs, [w["p50_ms"] for w in s["windows"]], "o-", color="tab:orange", label="p50")
    ax.set_xlabel("minutes into the soak")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot([t / 60 for t, _ in r["samples"]], [m for _, m in r["samples"]], color="tab:blue", label="server RSS")
    ax2.set_ylabel("server RSS (MB)")
    ax2.set_ylim(0, max(m for _, m in r["samples"]) * 1.2)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="lower right")
    share = f" ({res['load']:.0%} of capacity)" if res["capacity_rps"] else ""
    ax.set_title(f"tandem serve at {res['target_rps']:.0f} requests/s{share}: "
                 f"{s['errors']} errors, RSS {r['growth']:+.1%}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def merge_into_hardening(res: dict, path: Path = RESULTS / "hardening.json") -> None:
    """The soak's figures into hardening.json, keeping everything else there as it was."""
    hardening = _bench_script("hardening")
    FIGURES, SOAK = hardening.FIGURES, hardening.SOAK

    old: dict = json.loads(path.read_text()) if path.exists() else {}
    notes = old.pop("notes", None) or {}
    figures = {"soak_requests": res["soak"]["requests"], "soak_errors": res["soak"]["errors"],
               "rss_growth": res["rss"]["growth"], "soak_p99_drift": res["soak"]["p99_drift"],
               "soak_minutes": res["minutes"], "soak_rps": res["soak"]["achieved_rps"]}
    merged = {k: old.get(k) for k in FIGURES} | figures | {k: old.get(k) for k in SOAK if k not in figures} | old
    merged.update(figures)
    notes = {k: v for k, v in notes.items() if k not in SOAK}
    if notes:
        merged["notes"] = notes
    path.write_text(json.dumps(merged, indent=2) + "\n")


# --- main -----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="Length of the soak (after the warm-up).")
    ap.add_argument("--bundle", help="A bundle directory to serve (default: a tiny real test bundle).")
    ap.add_argument("--load", type=float, default=0.8, help="Soak rate as a fraction of the measured capacity.")
    ap.add_argument("--rate", type=float, help="Soak at this many requests/s instead (no capacity ramp).")
    ap.add_argument("--workers", type=int, default=1, help="tandem serve --workers.")
    ap.add_argument("--ramp-step-s", type=float, help="Seconds per capacity step (default 3 for a short soak, else 6).")
    ap.add_argument("--warmup-s", type=float, help="Paced warm-up before the RSS baseline (default 5%% of the "
                                                   "soak, 5-30 s).")
    ap.add_argument("--rss-every", type=float, default=2.0, help="Seconds between RSS samples.")
    ap.add_argument("--no-merge", action="store_true", help="Do not write the figures into hardening.json.")
    args = ap.parse_args()
    seconds = args.minutes * 60
    window_s = 60.0 if args.minutes >= 2 else 10.0
    warmup_s = args.warmup_s if args.warmup_s is not None else min(30.0, max(5.0, 0.05 * seconds))
    step_s = args.ramp_step_s or (3.0 if args.minutes < 3 else 6.0)

    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "home").mkdir(parents=True)
    console.print("setting up a registry under bench/work/soak …")
    prep = prepare(WORK / "home", Path(args.bundle) if args.bundle else None)
    jpegs, pixels = photos(prep.bundle)
    server = start_server(prep.home, args.workers, WORK / "server.log")
    proc, url = server.proc, server.url
    sampler = RssSampler(proc.pid, args.rss_every)
    try:
        plan = build_plan(url, prep.model, prep.input_name, prep.predict_key, prep.device_key, prep.version,
                          jpegs, pixels)
        sanity(plan)
        console.print(f"tandem serve (pid {proc.pid}) at {url}, model {prep.model} v{prep.version}; "
                      f"mix {', '.join(f'{k} {WEIGHTS[k]}0%' for k in KINDS)}")
        if args.rate:
            cap, steps, rate = None, [], args.rate
        else:
            console.print(f"measuring capacity (closed loop, {step_s:g} s a step) …")
            cap, steps = capacity(plan, step_s)
            rate = args.load * cap
        console.print(f"warming up for {warmup_s:g} s at {rate:.0f} requests/s …")
        warm = open_loop(plan, rate, warmup_s)
        sampler.start()
        sampler.restart_clock()
        with Progress(TextColumn("soak"), BarColumn(), TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task("soak", total=seconds, status="")
            seen = {"n": 0, "t": 0.0}

            def tick(t: float, rec: Record) -> None:
                n = len(rec.ok)
                recent = np.array(rec.latency[seen["n"]:]) * 1e3
                p99 = f"{np.percentile(recent, 99):.1f}" if len(recent) else "-"
                rps = (n - seen["n"]) / max(t - seen["t"], 1e-9)
                seen.update(n=n, t=t)
                progress.update(task, completed=min(t, seconds),
                                status=f"{n:,} requests, {rec.errors} errors, {rec.shed_count} shed, {rps:.0f}/s, "
                                       f"p99 {p99} ms")

            cpu0, own0 = cpu_seconds(proc.pid), time.process_time()
            rec = open_loop(plan, rate, seconds, tick)
            # Who used the cores: the server, the load generator (this process), and whatever else ran.
            cpu = {"server": round((cpu_seconds(proc.pid) - cpu0) / seconds, 2),
                   "load_generator": round((time.process_time() - own0) / seconds, 2)}
        sampler.stop()
    finally:
        server.stop()
    res = {"minutes": args.minutes, "load": None if args.rate else args.load,
           "capacity_rps": None if cap is None else round(cap, 1), "capacity_steps": steps,
           "target_rps": round(rate, 1), "mix": WEIGHTS, "warmup": {"seconds": warmup_s, "requests": len(warm.ok),
                                                                    "errors": warm.errors, "shed": warm.shed_count,
                                                                    "failures": warm.failures},
           "soak": summarise(rec, seconds, window_s), "rss": rss_figures(sampler.samples),
           "cpu_cores_used": cpu,
           "bundle": str(args.bundle or "tiny test bundle (tandem/testing/bundles.py)"),
           "workers": args.workers, "image_endpoint": f"/v1/apps/classify/{prep.model}:predict",
           "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                       "python": platform.python_version(), "loadavg_end": list(os.getloadavg())}}
    res["p99_drift"] = res["soak"]["p99_drift"]  # the figure issue 21 names, at the top
    drift = res["p99_drift"]
    res["targets_met"] = {"zero_errors": res["soak"]["errors"] == 0 and warm.errors == 0,
                          "rss_growth": res["rss"]["growth"] <= TARGET_RSS_GROWTH,
                          "p99_drift": drift is not None and drift <= TARGET_P99_DRIFT}
    RESULTS.mkdir(exist_ok=True)
    atomic.write_text(RESULTS / "soak.json", json.dumps(res, indent=2) + "\n")
    if plot(res, RESULTS / "soak.png"):
        console.print("wrote bench/results/soak.json and bench/results/soak.png")
    if not args.no_merge:
        merge_into_hardening(res)
        console.print("merged the soak figures into bench/results/hardening.json")
    print_table(res)
    if not all(res["targets_met"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
