"""The device SDK's own cost: what `HybridModel.predict` adds to ONNX Runtime, and how fast it
fails over when the server is gone.

    make bench-device        (or: .venv/bin/python bench/device.py [--bundle DIR] [--n 3000] [--quick])

(a) One already-preprocessed uint8 image (a real LFW photo when the data is there), `only_device`:
    `HybridModel.predict` against a bare `InferenceSession.run` on the same input and the same
    session (so the same thread settings), interleaved call by call (the order alternating), medians
    over --n calls each. Target (issue 5): overhead <= 5% of the bare run or <= 0.2 ms, whichever is
    larger.
(b) `prefer_cloud` with the server down, the device answering instead: a refused connection (no
    server on the port) and a blackhole (a port that accepts and never answers), each call timed
    before and after the circuit breaker opens; target <= the configured timeout + 10 ms. And a
    per-call deadline (`timeout_s`) against the blackhole with the breaker kept closed: the time a
    call takes, whose target is the same deadline + 10 ms.

The bundle is the demo's (tandem-demo/bundle), else the accuracy or serving benchmark's, else a
stand-in built in a second: the tiny real ONNX graph the tests use (tests/integration/server/
bundles.py). The overhead is a fixed cost per call, so its 0.2 ms bound applies to either.
Writes bench/results/device.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from tandem.bundle import Bundle
from tandem.bundle.preprocess import decode_image, to_input
from tandem.bundle.runtime import OnnxModel
from tandem.device import CircuitBreaker, CloudClient, HybridModel
from tandem.testing.processes import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "work" / "device"
RESULTS = HERE / "results"
CANDIDATES = (REPO / "tandem-demo" / "bundle", HERE / "work" / "accuracy" / "bundle-e75-v0-s0",
              HERE / "work" / "serving" / "bundle")
OVERHEAD_FRACTION, OVERHEAD_FLOOR_MS = 0.05, 0.2
FAILOVER_SLACK_MS = 10.0
console = Console(width=130)


# --- inputs -------------------------------------------------------------------------------------
def find_bundle(arg: str | None) -> tuple[Path, str]:
    if arg:
        return Path(arg), "given"
    for cand in CANDIDATES:
        if (cand / "manifest.json").is_file():
            return cand, "trained"
    stand_in = WORK / "stand-in"
    if not (stand_in / "manifest.json").is_file():
        from tandem.testing.bundles import make_bundle  # the tests' tiny bundle: no torch, a second to build

        console.print(f"[yellow]no trained bundle found; building the tests' tiny stand-in in {stand_in}[/]")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        make_bundle(stand_in, None, name="standin")
    return stand_in, "stand-in (tiny test graph)"


def one_image(bundle: Bundle) -> tuple[np.ndarray, str]:
    """(1, H, W, 3) uint8 as the manifest's preprocessing makes it."""
    home = os.environ.get("TANDEM_DATA_HOME")
    photos = sorted(Path(home).glob("lfw_home/lfw_funneled/Tony_Blair/*.jpg"))[:1] if home else []
    spec = bundle.manifest.preprocessing
    if photos:
        return to_input(decode_image(photos[0]), spec)[None], f"LFW {photos[0].name}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (1, spec.height, spec.width, 3), dtype=np.uint8), "random pixels"


# --- (a) overhead -------------------------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def overhead(model: OnnxModel, pixels: np.ndarray, n: int, warmup: int) -> dict:
    hm = HybridModel(model, policy="only_device")
    feeds = {model.input_name: pixels}
    names = model.output_names
    sess = model.session
    clock = time.perf_counter
    for _ in range(warmup):
        sess.run(names, feeds)
        hm.predict(feeds)
    raw, sdk = [], []
    for i in range(n):
        if i % 2:
            t = clock(); sess.run(names, feeds); raw.append(clock() - t)
            t = clock(); hm.predict(feeds); sdk.append(clock() - t)
        else:
            t = clock(); hm.predict(feeds); sdk.append(clock() - t)
            t = clock(); sess.run(names, feeds); raw.append(clock() - t)
    raw_ms, sdk_ms = [x * 1000 for x in raw], [x * 1000 for x in sdk]
    r50, s50 = statistics.median(raw_ms), statistics.median(sdk_ms)
    target = max(OVERHEAD_FRACTION * r50, OVERHEAD_FLOOR_MS)
    return {"raw_ms": round(r50, 4), "raw_p90_ms": round(pct(raw_ms, 90), 4), "sdk_ms": round(s50, 4),
            "sdk_p90_ms": round(pct(sdk_ms, 90), 4), "overhead_ms": round(s50 - r50, 4),
            "overhead_fraction": round((s50 - r50) / r50, 4), "overhead_target_ms": round(target, 4),
            "overhead_met": s50 - r50 <= target}


# --- (b) failover -------------------------------------------------------------------------------
def dead_port() -> str:
    return f"http://127.0.0.1:{free_port()}"  # closed again: connections are refused


def failover(model: OnnxModel, pixels: np.ndarray, url: str, timeout_s: float, calls: int) -> dict:
    """``calls`` prefer_cloud predicts against a server that is down; the breaker opens after 3."""
    breaker = CircuitBreaker(failures=3, cooldown_s=3600)
    feeds = {model.input_name: pixels}
    with CloudClient(url, "m", timeout_s=timeout_s, connect_timeout_s=timeout_s, breaker=breaker) as cloud:
        hm = HybridModel(model, cloud, policy="prefer_cloud")
        closed, opened = [], []
        for _ in range(calls):
            was_open = breaker.state == "open"
            t = time.perf_counter()
            r = hm.predict(feeds)
            ms = (time.perf_counter() - t) * 1000
            assert r.where == "device", r
            (opened if was_open else closed).append(ms)
    return {"before_open_ms": [round(x, 3) for x in closed], "open_p50_ms": round(statistics.median(opened), 4),
            "open_p90_ms": round(pct(opened, 90), 4), "open_max_ms": round(max(opened), 4),
            "max_ms": round(max(closed + opened), 3)}


def deadline(model: OnnxModel, pixels: np.ndarray, url: str, timeout_s: float, calls: int) -> dict:
    """prefer_cloud with a per-call deadline against a server that never answers, the breaker kept
    closed (so that every call waits out its deadline): how close to the deadline each call ends."""
    feeds = {model.input_name: pixels}
    with CloudClient(url, "m", timeout_s=30, connect_timeout_s=30,
                     breaker=CircuitBreaker(failures=10**9)) as cloud:
        hm = HybridModel(model, cloud, policy="prefer_cloud", timeout_s=timeout_s)
        took = []
        for _ in range(calls):
            t = time.perf_counter()
            r = hm.predict(feeds)
            took.append((time.perf_counter() - t) * 1000)
            assert r.where == "device" and "deadline" in (r.fallback or ""), r
    return {"p50_ms": round(statistics.median(took), 3), "max_ms": round(max(took), 3),
            "all_ms": [round(x, 2) for x in took]}


# --- main ---------------------------------------------------------------------------------------
def _shown(path: Path) -> str:
    """Relative to the repository when inside it: the results file is committed."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle folder (default: the demo's, a benchmark's, else a tiny stand-in)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (both sides)")
    p.add_argument("--n", type=int, default=3000, help="calls of each kind for the overhead")
    p.add_argument("--timeout", type=float, default=0.2, help="client timeout and deadline in seconds")
    p.add_argument("--calls", type=int, default=50, help="failover calls per kind of dead server")
    p.add_argument("--quick", action="store_true", help="fewer calls: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.n, args.calls = 300, 10

    bundle_dir, kind = find_bundle(args.bundle)
    bundle = Bundle.load(bundle_dir)
    model = OnnxModel.open(bundle, args.precision, threads=args.threads)
    pixels, source = one_image(bundle)
    console.print(f"bundle {bundle_dir} ({kind}; {bundle.manifest.name}, {args.precision}), input {pixels.shape} "
                  f"from {source}; {args.threads} ORT thread(s); load average {os.getloadavg()[0]:.2f}")
    load_start = list(os.getloadavg())

    over = overhead(model, pixels, args.n, warmup=max(50, args.n // 10))
    refused = failover(model, pixels, dead_port(), args.timeout, args.calls)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # accepts into the backlog, never reads nor answers
    try:
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        blackhole = failover(model, pixels, url, args.timeout, args.calls)
        dl = deadline(model, pixels, url, args.timeout, max(5, args.calls // 5))
    finally:
        hole.close()

    bound_ms = args.timeout * 1000 + FAILOVER_SLACK_MS
    failover_ms = max(refused["open_p50_ms"], blackhole["open_p50_ms"])
    met = {"overhead": over["overhead_met"],
           "failover": max(refused["max_ms"], blackhole["max_ms"]) <= bound_ms,
           "timeout": dl["max_ms"] <= bound_ms}
    result = {
        "bundle": _shown(bundle_dir), "bundle_kind": kind, "model": bundle.manifest.name, "precision": args.precision,
        "input": {"shape": list(pixels.shape), "source": source}, "ort_threads": args.threads, "n": args.n,
        **over,
        "failover_ms": failover_ms, "timeout_ms": dl["p50_ms"],
        "failover": {"configured_timeout_s": args.timeout, "calls": args.calls, "breaker_failures": 3,
                     "refused": refused, "blackhole": blackhole},
        "deadline": {"timeout_s": args.timeout, **dl},
        "targets": {"overhead_ms": over["overhead_target_ms"],
                    "overhead_rule": f"<= max({OVERHEAD_FRACTION:.0%} of raw_ms, {OVERHEAD_FLOOR_MS} ms)",
                    "failover_max_ms": bound_ms, "timeout_max_ms": bound_ms},
        "met": met,
        "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "onnxruntime": ort.__version__,
                    "loadavg_start": load_start, "loadavg_end": list(os.getloadavg())},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "device.json").write_text(json.dumps(result, indent=1) + "\n")

    def ok(flag: bool) -> str:
        return "[green]yes[/]" if flag else "[red]no[/]"

    t = Table(title=f"device SDK — {bundle.manifest.name} ({kind}), {args.threads} ORT thread(s), n={args.n}")
    for col in ("measure", "p50 ms", "p90 / max ms", "target", "met"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    t.add_row("bare InferenceSession.run", f"{over['raw_ms']:.4f}", f"{over['raw_p90_ms']:.4f}", "", "")
    t.add_row("HybridModel.predict only_device", f"{over['sdk_ms']:.4f}", f"{over['sdk_p90_ms']:.4f}", "", "")
    t.add_row("SDK overhead per call", f"{over['overhead_ms']:.4f} ({over['overhead_fraction']:.1%})", "",
              f"<= {over['overhead_target_ms']:.3f}", ok(over["overhead_met"]))
    for name, r in (("refused", refused), ("blackhole", blackhole)):
        t.add_row(f"prefer_cloud failover, {name}, before the breaker opens",
                  ", ".join(f"{x:.1f}" for x in r["before_open_ms"]), "", f"<= {bound_ms:.0f}",
                  ok(max(r["before_open_ms"]) <= bound_ms))
        t.add_row(f"prefer_cloud failover, {name}, breaker open", f"{r['open_p50_ms']:.3f}",
                  f"{r['open_p90_ms']:.3f} / {r['open_max_ms']:.3f}", f"<= {bound_ms:.0f}", ok(r["max_ms"] <= bound_ms))
    t.add_row(f"prefer_cloud, deadline {args.timeout:g} s, blackhole", f"{dl['p50_ms']:.1f}", f"{dl['max_ms']:.1f}",
              f"<= {bound_ms:.0f}", ok(met["timeout"]))
    console.print(t)
    console.print(f"wrote {RESULTS / 'device.json'}")


if __name__ == "__main__":
    main()
