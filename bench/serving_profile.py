"""Where the serving stack's CPU goes: `stack_cpu_ms` and py-spy flame graphs of a loaded `tandem serve`.

    .venv/bin/python bench/serving_profile.py [--bundle DIR] [--duration 10] [--quick]

Starts a real `tandem serve` (one worker) on the serving benchmark's bundle and settings (batch 8,
2 ms, one ONNX Runtime thread per call; bench/serving.py), drives it at concurrency 16 with
bench/serving/loadgen.py, once per encoding (OIP binary tensors, OIP JSON):

1. measured runs (--repeats, 3; the median one's figures are kept, all their stack_cpu_ms listed), nothing
   attached: the CPU of every thread of the server (/proc/PID/task/*/stat,
   utime + stime, children included) over the measured phase. The model's own CPU is what the server's
   `tandem_inference_cpu_seconds_total` counted meanwhile (each ONNX Runtime call's CPU on the thread
   that made it, read from the thread's clock around the call: batching.ModelThreads) plus the CPU of
   any thread Python does not know (ONNX Runtime's own pool, the lone-request session's).
   stack_cpu_ms = (server CPU - model CPU) / answered requests.
   Not the inference-duration metric: that is the wall time of the calls, and with two calls in
   flight on two cores it includes every moment a call waited for a core (it exceeds the whole
   server's CPU at c16). Two other figures bracket it: `stack_cpu_ms_threads_only` counts every CPU
   second of the model threads as the model's (a lower bound: their hand-over to and from the event
   loop is the stack's), and `stack_cpu_ms_sampled` splits those threads' CPU by the profile's share
   of their samples outside `onnxruntime` frames (`ort_thread_python`), as this script did before the
   metric existed. That overstates the stack: py-spy takes a thread as busy while it is runnable, so
   a model thread woken from its queue and waiting for a core counts as hand-over CPU.
2. a profiled run: py-spy records the server twice at once (--nonblocking, so the server is never
   paused): an SVG flame graph (bench/results/serving_flame_<target>.svg) and raw collapsed stacks,
   bucketed here by the files of their frames (the innermost frame that names a category decides).

Adds `stack_cpu_ms` (the OIP binary figure, the one issue 21 targets) and `stack_profile` (both
encodings: CPU figures and category shares) to bench/results/serving.json, keeping what is there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("serving_bench", HERE / "serving.py")
assert _spec is not None and _spec.loader is not None
sb = importlib.util.module_from_spec(_spec)
sys.modules["serving_bench"] = sb  # its dataclasses look their module up
_spec.loader.exec_module(sb)

PYSPY = Path(sys.executable).parent / "py-spy"
TARGET_STACK_MS = 0.4
MODEL_CPU_METRIC = "tandem_inference_cpu_seconds_total"

EVENT_LOOP = "event loop + socket I/O (uvloop)"
# A thread whose innermost Python frame is Thread.run runs C code its target called directly: in a Ray Serve
# replica, the event loop (uvloop's run_forever) in the thread Ray gives the app's code. Not a thread hand-off.
THREAD_RUNNING_C = "Thread.run (threading.py"


# (category, substrings of a frame's "function (file:line)"); the innermost frame matching one decides.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("ORT (model)", ("onnxruntime",)),
    ("logging", ("logging/", "tandem/logs", "tandem/server/accesslog")),
    ("metrics", ("prometheus_client", "tandem/server/prometheus.py", "tandem/server/statistics.py",
                 "tandem/server/workers.py")),
    ("auth", ("tandem/server/auth.py", "tandem/server/ratelimit.py", "hashlib", "hmac", "secrets.py")),
    ("codec (JSON/binary)", ("tandem/protocol/", "tandem/server/oip.py", "orjson", "json/", "numpy/")),
    ("batching hand-off", ("tandem/server/batching.py", "concurrent/futures", "threading.py", "queue.py")),
    ("HTTP parsing (uvicorn)", ("uvicorn/", "httptools", "h11", "tandem/server/body.py",
                                "tandem/server/connections.py")),
    # Ray Serve's replica around the app (bench/scale.py --profile): its direct-ingress ASGI wrapper,
    # request metadata, metrics and the core worker's Python.
    ("Ray Serve (replica)", ("(ray/serve/", "(ray/_private/", "(ray/_raylet", "(ray/util/", "(ray/actor",
                             "(ray/remote_function", "(ray/_common/")),
    ("routing/middleware", ("starlette/", "tandem/server/", "anyio/")),
    # A main-thread sample whose innermost Python frame is the loop's runner is in uvloop's C code:
    # socket reads and writes, epoll, callback dispatch.
    (EVENT_LOOP, ("asyncio/", "uvloop", "selectors.py")),
]
OTHER = "other"


def categorise(frames: list[str]) -> str:
    if frames and frames[-1].startswith(THREAD_RUNNING_C):
        return EVENT_LOOP
    for f in reversed(frames):
        for cat, needles in CATEGORIES:
            if any(n in f for n in needles):
                return cat
    return OTHER


def summarise(raw: Path) -> dict:
    """Category shares of the samples in py-spy's raw (collapsed) output, and the share of the
    ORT executor threads' samples spent outside ONNX Runtime."""
    cats: dict[str, int] = {}
    total = ort_total = ort_python = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread ("))]
        cat = categorise(frames)
        cats[cat] = cats.get(cat, 0) + k
        total += k
        thread = next((f for f in stack.split(";") if f.startswith("thread (")), "")
        if "): ort-" in thread:  # "thread (TID): NAME": the batcher's executor threads
            ort_total += k
            if cat != "ORT (model)":
                ort_python += k
    if not total:
        raise RuntimeError(f"py-spy wrote no samples to {raw}")
    shares = {c: round(v / total, 4) for c, v in sorted(cats.items(), key=lambda kv: -kv[1])}
    return {"samples": total, "share": shares,
            "ort_thread_python": round(ort_python / ort_total, 4) if ort_total else None}


# --- threads of the server --------------------------------------------------------------------

def thread_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (utime + stime) of every thread of ``pids``: {tid: seconds}."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for p in pids:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                fields = Path(f"/proc/{p}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(t)] = (int(fields[11]) + int(fields[12])) / tick
    return out


DUMP_THREAD = re.compile(r'^Thread (0x[0-9A-Fa-f]+|\d+) \([^)]*\): "([^"]*)"')


def python_threads(pid: int) -> dict[int, str]:
    """{OS thread id: Python thread name} from `py-spy dump` (Python 3.11 gives threads no OS name)."""
    out = subprocess.run([str(PYSPY), "dump", "--pid", str(pid), "--nonblocking"], check=False,
                         capture_output=True,
                         text=True, timeout=60)
    names: dict[int, str] = {}
    for line in out.stdout.splitlines():
        m = DUMP_THREAD.match(line.strip())
        if m:
            ident = m.group(1)
            names[int(ident, 16) if ident.startswith("0x") else int(ident)] = m.group(2)
    if not names:
        raise RuntimeError(f"py-spy dump found no threads in {pid}: {out.stderr[-500:]}")
    return names


def measure(srv: Any, reqs: Path, concurrency: int, duration: float, warmup: float) -> dict:
    """One loaded run with nothing attached: server CPU by thread over the measured phase."""
    cmd = [sys.executable, str(sb.APPS / "loadgen.py"), "--requests", str(reqs), "--port", str(srv.port),
           "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup)]
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    snaps: dict[str, dict[int, float]] = {}
    walls: dict[str, float] = {}
    model_cpu: dict[str, float] = {}
    result = None
    assert gen.stdout is not None
    for raw in gen.stdout:
        line = raw.strip()
        if line in ("START", "END"):
            snaps[line], walls[line] = thread_cpu(srv.pids()), time.monotonic()
            model_cpu[line] = sb.scrape(srv).get(MODEL_CPU_METRIC, 0.0)
        elif line.startswith("{"):
            result = json.loads(line)
    gen.wait(60)
    if result is None or len(snaps) != 2:
        raise RuntimeError(f"load generator failed: {gen.stderr.read() if gen.stderr else ''}")
    result["thread_cpu_s"] = {t: snaps["END"].get(t, 0.0) - snaps["START"].get(t, 0.0)
                              for t in snaps["END"]}
    result["wall_measured_s"] = walls["END"] - walls["START"]
    result["model_call_cpu_s"] = model_cpu["END"] - model_cpu["START"]
    return result


def stack_figures(run: dict, names: dict[int, str], ort_thread_python: float) -> dict:
    """CPU per request: the server's, the model's, and the stack's (the rest). ``ort_thread_python``:
    the profile's share of the executor threads' samples outside ONNX Runtime (for the sampled figure)."""
    cpu = run["thread_cpu_s"]
    server = sum(cpu.values())
    ort_py = sum(v for t, v in cpu.items() if names.get(t, "").startswith("ort-"))
    native = sum(v for t, v in cpu.items() if t not in names)  # ONNX Runtime's own pool threads
    if run["model_call_cpu_s"] <= 0:
        raise RuntimeError(f"the server's {MODEL_CPU_METRIC} did not move over the run: is it older than the metric?")
    model = run["model_call_cpu_s"] + native
    sampled = ort_py * (1 - ort_thread_python) + native
    n = max(1, run["ok"])
    by_name: dict[str, float] = {}
    for t, v in cpu.items():
        key = re.sub(r"_\d+$", "_*", names.get(t, "native (not Python)"))
        by_name[key] = round(by_name.get(key, 0.0) + v, 3)
    return {
        "requests": run["ok"], "rps": run["rps"], "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
        "errors": run["errors"], "wall_s": round(run["wall_measured_s"], 3),
        "server_cpu_s": round(server, 3), "model_cpu_s": round(model, 3),
        "server_cpu_ms_per_req": round(server * 1000 / n, 4),
        "model_cpu_ms_per_req": round(model * 1000 / n, 4),
        "stack_cpu_ms": round((server - model) * 1000 / n, 4),
        # The same with every CPU second of the executor threads counted as the model's (a lower bound).
        "stack_cpu_ms_threads_only": round((server - ort_py - native) * 1000 / n, 4),
        # ... and with their CPU split by py-spy's samples (overstates the stack: see the module's doc).
        "stack_cpu_ms_sampled": round((server - sampled) * 1000 / n, 4),
        # What the model threads did besides the calls: hand-over to and from the event loop.
        "model_threads_other_cpu_ms": round((ort_py - run["model_call_cpu_s"]) * 1000 / n, 4),
        "thread_cpu_s": dict(sorted(by_name.items(), key=lambda kv: -kv[1])),
    }


def record(pid: int, seconds: float, rate: int, svg: Path, raw: Path, *extra: str) -> list[subprocess.Popen]:
    """py-spy recording ``pid`` twice at once without pausing it (--nonblocking): an SVG flame graph (written to
    ``svg`` by finish) and raw stacks at ``raw``; returns once both are attached."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    common = ["--pid", str(pid), "--rate", str(rate), "--duration", str(int(seconds)), "--nonblocking", "--threads",
              *extra]
    spies = [subprocess.Popen([str(PYSPY), "record", "--format", fmt, "-o", str(out), *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for fmt, out in (("flamegraph", svg.with_suffix(".svg.tmp")), ("raw", raw))]
    time.sleep(1.0)  # py-spy attached before the load starts
    return spies


def finish(spies: list[subprocess.Popen], svg: Path) -> None:
    """Wait for record's two py-spy runs; the flame graph replaces ``svg`` whole."""
    for s in spies:
        _, err = s.communicate(timeout=120)
        if s.returncode != 0:
            raise RuntimeError(f"py-spy failed ({s.returncode}): {err[-800:]}")
    os.replace(svg.with_suffix(".svg.tmp"), svg)


def profile(srv: Any, reqs: Path, concurrency: int, seconds: float, rate: int, name: str) -> dict:
    """A loaded run with py-spy recording an SVG flame graph and raw stacks at once."""
    svg = sb.RESULTS / f"serving_flame_{name}.svg"
    raw = sb.WORK / "profile" / f"{name}_c{concurrency}.raw.txt"
    spies = record(srv.proc.pid, seconds, rate, svg, raw, "--subprocesses")
    run = measure(srv, reqs, concurrency, seconds, 0.5)
    finish(spies, svg)
    return {"flame_graph": str(svg.relative_to(sb.ROOT)), "rps_while_profiled": run["rps"],
            "rate_hz": rate, **summarise(raw)}


def print_table(rows: dict) -> None:
    cats = [c for c, _ in CATEGORIES] + [OTHER]
    t = sb.Table(title=f"where the CPU goes (c{rows['concurrency']}: share of the server's samples, "
                       "and that share of its CPU per request)")
    t.add_column("")
    names = [n for n in rows if n.startswith("tandem_")]
    for n in names:
        t.add_column(n, justify="right")
    for k in ("rps", "server_cpu_ms_per_req", "model_cpu_ms_per_req", "stack_cpu_ms", "stack_cpu_ms_threads_only",
              "stack_cpu_ms_sampled", "model_threads_other_cpu_ms"):
        t.add_row(k, *[sb.fmt(rows[n][k], 3) for n in names])
    for c in cats:
        t.add_row(c, *[f"{rows[n]['profile']['share'].get(c, 0.0):.1%} "
                       f"({rows[n]['profile']['ms_per_req'].get(c, 0.0):.3f} ms)" for n in names])
    t.add_row("ORT threads' Python", *[f"{rows[n]['profile']['ort_thread_python'] or 0:.1%}" for n in names])
    sb.console.print(t)


def write_json_keys(path: Path, updates: dict) -> None:
    """Add ``updates`` to the JSON object at ``path`` (whatever else it holds stays), atomically."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(updates)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="celebmatch bundle folder (default: bench/serving.py's)")
    p.add_argument("--duration", type=float, default=10.0, help="measured (and profiled) seconds per encoding")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--repeats", type=int, default=3, help="measured runs per encoding (the median one is kept)")
    p.add_argument("--targets", default="tandem_binary,tandem_json")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--ort-threads", type=int, default=1)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s per run")
    p.add_argument("--out", default=str(sb.RESULTS / "serving.json"), help="JSON the keys are added to")
    args = p.parse_args()
    if args.quick:
        args.duration, args.warmup, args.repeats = 3.0, 0.5, 1
    args.workers, args.swap_versions = 1, 1
    if not PYSPY.exists():
        p.error(f"{PYSPY} missing: pip install -e '.[dev]' (py-spy is in the dev extra)")
    targets = [t for t in args.targets.split(",") if t]

    bundle_dir = sb.find_bundle(args.bundle)
    bundle = sb.Bundle.load(bundle_dir)
    images = sb.load_images(bundle, args.images)
    home = sb.TandemHome(bundle_dir, args)
    all_targets = sb.make_targets(images, bundle.manifest.name, home.key)
    expect = sb.expected_outputs(bundle.model_path("fp32"), images[:8], args.ort_threads)
    srv = home.serve(args)
    rows: dict = {"concurrency": args.concurrency}
    try:
        for name in targets:
            target = all_targets[name]
            reqs = target.write(srv.port)
            sb.validate(target, srv.port, images, expect)
            sb.console.print(f"{name} c={args.concurrency}: measuring {args.repeats} times …")
            runs = [measure(srv, reqs, args.concurrency, args.duration, args.warmup) for _ in range(args.repeats)]
            names = python_threads(srv.proc.pid)  # after a loaded run: every executor thread exists
            sb.console.print("  profiling with py-spy …")
            prof = profile(srv, reqs, args.concurrency, args.duration, args.rate, name)
            figures = sorted((stack_figures(r, names, prof["ort_thread_python"] or 0.0) for r in runs),
                             key=lambda f: f["stack_cpu_ms"])
            # The median run's figures: on this shared 2-core machine one 10 s run's stack_cpu_ms varies by ±0.05 ms.
            row = {**figures[len(figures) // 2], "stack_cpu_ms_runs": [f["stack_cpu_ms"] for f in figures],
                   "profile": prof}
            # Samples are of threads running or ready to run: a category's share of them is about its share of
            # the CPU (a thread waiting for a core counts as well).
            prof["ms_per_req"] = {c: round(v * row["server_cpu_ms_per_req"], 3) for c, v in prof["share"].items()}
            rows[name] = row
            sb.console.print(row)
    finally:
        srv.stop()
    print_table(rows)
    method = ("server CPU: utime+stime of every thread of the tandem serve process tree over the measured "
              "phase (/proc/PID/task/*/stat), nothing attached; model CPU: the server's "
              "tandem_inference_cpu_seconds_total over the same phase (each ONNX Runtime call's CPU on its "
              "thread's clock) plus the CPU of threads Python does not know (ONNX Runtime's pools); stack_cpu_ms = "
              "(server - model) / answered requests; categories: py-spy raw samples of a second run, "
              "innermost frame naming a category (bench/serving_profile.py)")
    out = Path(args.out)
    updates: dict = {"stack_profile": {**rows, "method": method, "quick": args.quick,
                                       "target_stack_cpu_ms": TARGET_STACK_MS}}
    if "tandem_binary" in rows and not args.quick:
        updates["stack_cpu_ms"] = rows["tandem_binary"]["stack_cpu_ms"]
    write_json_keys(out, updates)
    sb.console.print(f"updated {out}")


if __name__ == "__main__":
    main()
