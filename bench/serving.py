"""HTTP serving benchmark: Tandem against BentoML, LitServe, Triton (PyTriton), KServe and MLServer on the same
ONNX file.

    make bench-serving        (or: .venv/bin/python bench/serving.py [--bundle DIR] [--quick])

One run measures, on this machine and with the same real LFW photos (one image per request):
- the model in process with ONNX Runtime, at batch 1 (median latency) and at the server's max batch
  size (images/s), with the thread settings the servers get (the physical limit of this CPU);
- each target under a closed-loop load at concurrency 1, 4 and 16, driven by bench/serving/loadgen.py
  (raw asyncio HTTP/1.1, keep-alive, requests pre-encoded to the byte, its own CPU time reported):
  `tandem_binary` (OIP v2 + binary tensor extension), `tandem_json` (OIP v2 JSON), and the peers
  `bentoml`, `litserve`, `triton`, `kserve` and `mlserver`, each started from its own virtual environment
  under bench/work/venvs/ (bench/serving/setup_peers.sh) with the same ONNX Runtime threads and batch
  limits (KServe's ModelServer has no batching of its own);
- the same cells again with `wrk` (a C load generator no one here wrote, Debian's package) posting the
  same bytes through bench/serving/wrk_post.lua, in the results' `wrk` section (--no-wrk: not);
- Tandem's mean batch size (from its /metrics) and the server's CPU per request;
- p99 at concurrency 16 steady and while the alias `production` is moved between two versions.

Prints a table and writes bench/results/serving.json and bench/results/serving.png.

The machine is shared: every cell records the CPU that other processes used meanwhile
(`other_cpu_share`); before each server the run waits (--wait-quiet) for other work to stop, and a
cell disturbed anyway is measured again (--retries) keeping the least disturbed try. --profile adds
py-spy samples of Tandem's server at the top concurrency (extra cells, not in the numbers).
bench/serving_profile.py measures `stack_cpu_ms` (the server's CPU per request less the model's) and
records the flame graphs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tandem.bundle import Bundle
from tandem.bundle.preprocess import decode_image, to_input
from tandem.bundle.runtime import load_session
from tandem.data.lfw import load_lfw
from tandem.settings import get_settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = HERE / "serving"
WORK = HERE / "work" / "serving"
VENVS = HERE / "work" / "venvs"
RESULTS = HERE / "results"
TANDEM = Path(sys.executable).parent / "tandem"
console = Console(width=None if sys.stdout.isatty() else 160)

TARGETS = ("tandem_binary", "tandem_json", "bentoml", "litserve", "triton", "kserve", "mlserver")
PEERS = ("bentoml", "litserve", "triton", "kserve", "mlserver")
WHAT_EACH_GOT = {
    "tandem_binary": "OIP v2 binary tensor extension: POST /v2/models/{name}/infer, JSON header (input 'pixels' "
                     "UINT8 [1,100,75,3] with binary_data_size, both outputs asked as binary) + 22,500 raw bytes, "
                     "Inference-Header-Content-Length, Authorization: Bearer; answer: JSON header + 700 bytes float32",
    "tandem_json": "OIP v2 JSON: POST /v2/models/{name}/infer {inputs: [{name: pixels, datatype: UINT8, shape: "
                   "[1,100,75,3], data: [22,500 ints]}]}, Authorization: Bearer; answer: OIP JSON, both outputs",
    "bentoml": "BentoML's native JSON for an ndarray argument: POST /predict {\"pixels\": nested list [1][100][75][3]}; "
               "answer: JSON nested list [1][175] (probabilities then embedding); no auth",
    "litserve": "byte-for-byte the tandem_json body: POST /v2/models/{name}/infer, decoded in LitServe's "
                "decode_request; answer: OIP JSON, both outputs; no auth",
    "triton": "byte-for-byte the tandem_json body on Triton's own OIP v2 route POST /v2/models/{name}/infer; "
              "answer: OIP JSON, both outputs; no auth",
    "kserve": "byte-for-byte the tandem_json body on KServe ModelServer's own OIP v2 route POST "
              "/v2/models/{name}/infer; answer: OIP JSON, both outputs; no auth; no batching (KServe's batcher "
              "is the Kubernetes sidecar agent, v1 protocol only)",
    "mlserver": "byte-for-byte the tandem_json body on MLServer's own OIP v2 route POST /v2/models/{name}/infer, "
                "adaptive batching on; answer: OIP JSON, both outputs; no auth",
}


# --- machine ------------------------------------------------------------------------------------

def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def machine_busy(seconds: float = 2.0) -> float:
    """Share of the machine's CPU busy (all processes) over ``seconds``; 1.0 = every core busy."""
    b0, t0 = cpu_times()
    time.sleep(seconds)
    b1, t1 = cpu_times()
    return (b1 - b0) / max(1e-9, t1 - t0)


def wait_quiet(limit_s: float, threshold: float = 0.15, exclude: list[int] | None = None) -> float:
    """Wait (up to ``limit_s``) until other work leaves the machine less than ``threshold`` busy (the
    processes in ``exclude``, e.g. our idle server, not counted); the share busy when we went on."""
    t0 = time.monotonic()
    cores = os.cpu_count() or 1
    while True:
        b0, tt0 = cpu_times()
        s0 = cpu_seconds(exclude or [])
        time.sleep(2.0)
        b1, tt1 = cpu_times()
        ours = (cpu_seconds(exclude or []) - s0) / 2.0 / cores
        busy = max(0.0, (b1 - b0) / max(1e-9, tt1 - tt0) - ours)
        if busy < threshold or time.monotonic() - t0 >= limit_s:
            return round(busy, 3)
        console.print(f"  [yellow]the machine is {busy:.0%} busy with other work; waiting for it to calm down…[/]")
        time.sleep(3)


UNEVEN = 0.8  # a batch size's images/s below this share of batch 1's: a disturbed measurement (uneven())
DISTURBED = 0.25  # cores of CPU used by other processes during a cell above which it is flagged


def machine_info() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()),
        "busy_before_start": round(machine_busy(), 3),
    }


# --- processes ----------------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_tree(proc: subprocess.Popen, deadline_s: float = 10.0) -> None:
    """Stop a server we started by its PIDs: the main process first (so it can stop its workers),
    then whatever of its children is left (some peers start workers outside the process group),
    each with a deadline, then SIGKILL."""
    if proc.poll() is not None:
        return
    kids = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(deadline_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    kids = [k for k in kids if alive(k)]
    for k in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(k, signal.SIGTERM)
    end = time.monotonic() + 5
    while kids and time.monotonic() < end:
        time.sleep(0.1)
        kids = [k for k in kids if alive(k)]
    for k in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(k, signal.SIGKILL)


def free_port(span: int = 1) -> int:
    """A port p with p .. p+span-1 all free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + span > 65535:
            continue
        ok = True
        for q in range(p + 1, p + span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
                    break
        if ok:
            return p
    raise RuntimeError("no free port range on 127.0.0.1")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, body, headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path
    headers: dict[str, str] = field(default_factory=dict)
    started_s: float = 0.0
    metrics_port: int | None = None  # where its Prometheus /metrics is, if it has one

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    def wait_ready(self, path: str, timeout: float) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}:\n{tail(self.log)}")
            with contextlib.suppress(OSError):
                status, _, _ = http("GET", f"http://127.0.0.1:{self.port}{path}", headers=self.headers, timeout=2)
                if status == 200:
                    self.started_s = round(time.monotonic() - t0, 2)
                    return
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; see {self.log}:\n{tail(self.log)}")

    def stop(self) -> None:
        stop_tree(self.proc)


def tail(path: Path, n: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


def start(name: str, cmd: list[str], env: dict[str, str], port: int, cwd: Path) -> Server:
    log = WORK / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    f = open(log, "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    f.close()
    return Server(name, proc, port, log)


# --- the workload -------------------------------------------------------------------------------

def find_bundle(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    for cand in (ROOT / "tandem-demo" / "bundle", HERE / "work" / "accuracy" / "bundle-e75-v0-s0", WORK / "bundle"):
        if (cand / "manifest.json").is_file():
            return cand
    # None yet: a quick one. The architecture (and so the cost per image) is the full-size model's;
    # one epoch on a third of the data is enough to measure serving, not accuracy.
    console.print("[yellow]no bundle given or found: training a quick celebmatch bundle (1 epoch, about a minute)[/]")
    run = WORK / "run"
    shutil.rmtree(run, ignore_errors=True)
    subprocess.run([str(TANDEM), "train", "--data", "lfw", "--min-faces", "20", "--epochs", "1", "--subset", "0.3",
                    "--name", "celebmatch", "--no-progress", "--out", str(run)], check=True)
    # ONNX only: serving runs the fp32 ONNX file, and a one-epoch model fails the LiteRT int8 agreement check.
    subprocess.run([str(TANDEM), "export", str(run), "--formats", "onnx", "--out", str(WORK / "bundle")], check=True,
                   stdout=subprocess.DEVNULL)
    return WORK / "bundle"


def load_images(bundle: Bundle, n: int) -> np.ndarray:
    """``n`` real LFW photos (spread over the 47 people), preprocessed as the bundle says."""
    cat = load_lfw(get_settings().require_data_home(), min_faces=20)
    step = max(1, len(cat.records) // n)
    picks = cat.records[::step][:n]
    spec = bundle.manifest.preprocessing.model_copy(update={"crop": cat.crop})
    return np.stack([to_input(decode_image(r.path), spec) for r in picks])


def http_request(path: str, port: int, body: bytes, content_type: str, extra: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def oip_json_body(img: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, *img.shape],
                                   "data": img.ravel().tolist()}]}, separators=(",", ":")).encode()


def oip_binary_body(img: np.ndarray) -> tuple[bytes, int]:
    raw = np.ascontiguousarray(img, np.uint8).tobytes()
    header = json.dumps({
        "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, *img.shape],
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                    {"name": "embedding", "parameters": {"binary_data": True}}],
    }, separators=(",", ":")).encode()
    return header + raw, len(header)


def bentoml_body(img: np.ndarray) -> bytes:
    return json.dumps({"pixels": img[None].tolist()}, separators=(",", ":")).encode()


@dataclass
class Target:
    name: str
    path: str
    bodies: list[tuple[bytes, str, dict[str, str]]]  # (body, content type, extra headers) per image

    def requests(self, port: int) -> list[bytes]:
        return [http_request(self.path, port, b, ct, h) for b, ct, h in self.bodies]

    def write(self, port: int) -> Path:
        p = WORK / "requests" / f"{self.name}.pkl"
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            pickle.dump(self.requests(port), f)
        return p

    def write_wrk(self, port: int) -> Path:
        """The same requests for bench/serving/wrk_post.lua: their lengths on one line, then the bytes."""
        reqs = self.requests(port)
        p = WORK / "requests" / f"{self.name}.wrk"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(" ".join(str(len(r)) for r in reqs).encode() + b"\n" + b"".join(reqs))
        return p


def make_targets(images: np.ndarray, model: str, key: str) -> dict[str, Target]:
    auth = {"Authorization": f"Bearer {key}"}
    infer = f"/v2/models/{model}/infer"
    json_bodies = [oip_json_body(im) for im in images]
    binary = []
    for im in images:
        body, hlen = oip_binary_body(im)
        binary.append((body, "application/octet-stream", {**auth, "Inference-Header-Content-Length": str(hlen)}))
    return {
        "tandem_binary": Target("tandem_binary", infer, binary),
        "tandem_json": Target("tandem_json", infer, [(b, "application/json", auth) for b in json_bodies]),
        "bentoml": Target("bentoml", "/predict", [(bentoml_body(im), "application/json", {}) for im in images]),
        "litserve": Target("litserve", infer, [(b, "application/json", {}) for b in json_bodies]),
        "triton": Target("triton", infer, [(b, "application/json", {}) for b in json_bodies]),
        "kserve": Target("kserve", infer, [(b, "application/json", {}) for b in json_bodies]),
        "mlserver": Target("mlserver", infer, [(b, "application/json", {}) for b in json_bodies]),
    }


def parse_answer(target: str, headers: dict, body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, embedding) of one image from a target's answer."""
    if target == "bentoml":
        row = np.asarray(json.loads(body), np.float32).reshape(-1)
        return row[:-128], row[-128:]
    hlen = {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")
    if hlen is not None:
        header = json.loads(body[: int(hlen)])
        out, pos = {}, int(hlen)
        for o in header["outputs"]:
            size = o["parameters"]["binary_data_size"]
            out[o["name"]] = np.frombuffer(body[pos: pos + size], np.float32)
            pos += size
    else:
        out = {o["name"]: np.asarray(o["data"], np.float32) for o in json.loads(body)["outputs"]}
    return out["probabilities"], out["embedding"]


def validate(target: Target, port: int, images: np.ndarray, expect: dict[str, np.ndarray], n: int = 4,
             answers: list[np.ndarray] | None = None) -> float:
    """Send ``n`` images, check every answer against in-process ONNX Runtime; the largest difference.
    Each answer (probabilities then embedding) is appended to ``answers`` if given."""
    worst = 0.0
    for i in range(n):
        body, ct, extra = target.bodies[i]
        status, headers, answer = http("POST", f"http://127.0.0.1:{port}{target.path}", body,
                                       {"Content-Type": ct, **extra})
        if status != 200:
            raise RuntimeError(f"{target.name}: HTTP {status} on a valid request: {answer[:300]!r}")
        p, e = parse_answer(target.name, headers, answer)
        if answers is not None:
            answers.append(np.concatenate([p, e]))
        worst = max(worst, float(np.abs(p - expect["probabilities"][i]).max()),
                    float(np.abs(e - expect["embedding"][i]).max()))
    if worst > 1e-3:
        raise RuntimeError(f"{target.name}: answers differ from in-process ONNX Runtime by {worst:.2e}")
    return worst


# --- in process ---------------------------------------------------------------------------------

def inproc(model_path: Path, images: np.ndarray, threads: int, batch: int, seconds: float, rounds: int = 3) -> dict:
    """The model alone: batch-1 latency (median of a round) and images/s per batch size, best of
    ``rounds`` interleaved rounds: on a shared machine noise only ever slows a round down, so the best
    round is the CPU's capability (and the harder reference for the targets)."""
    s = load_session(model_path, threads)
    outs = ["probabilities", "embedding"]

    def run(x: np.ndarray) -> None:
        s.run(outs, {"pixels": x})

    for i in range(20):
        run(images[i % len(images)][None])
    (b0, t0_all), cpu0, wall0 = cpu_times(), time.process_time(), time.perf_counter()
    sizes = sorted({1, 2, 4, batch, 2 * batch})
    b1_rounds: list[float] = []
    b1_p99: list[float] = []
    curve = dict.fromkeys(sizes, 0.0)
    i = 0
    for _ in range(rounds):
        times: list[float] = []
        t_end = time.perf_counter() + seconds / rounds
        while time.perf_counter() < t_end or len(times) < 50:
            x = images[i % len(images)][None]
            t0 = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t0)
            i += 1
        b1_rounds.append(statistics.median(times) * 1000)
        b1_p99.append(float(np.percentile(np.array(times) * 1000, 99)))
        for b in sizes:
            xb = np.stack([images[(j * 7 + i) % len(images)] for j in range(b)])
            run(xb)
            n = 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds / rounds / 2 or n < 5:
                run(xb)
                n += 1
            curve[b] = max(curve[b], b * n / (time.perf_counter() - t0))
    (b1, t1_all), cores = cpu_times(), os.cpu_count() or 1
    ours = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    other = max(0.0, (b1 - b0) / max(1e-9, t1_all - t0_all) * cores - ours)
    return {
        "threads": threads,
        "b1_ms": round(min(b1_rounds), 3),
        "b1_ms_rounds": [round(v, 3) for v in b1_rounds],
        "b1_p99_ms": round(min(b1_p99), 3),
        "batch": batch,
        "bN_rps": round(curve[batch], 1),
        "images_per_s_by_batch": {str(b): round(v, 1) for b, v in curve.items()},
        "rounds": rounds,
        "other_cpu_share": round(other, 3),  # cores other processes used meanwhile
    }


def uneven(ip: dict) -> str:
    """Why an inproc() result cannot be the CPU's capability, or "": a batch that ran well below batch 1's
    images/s on the same session. Batching never costs ONNX Runtime a fifth of its rate on this model
    (one thread: 342-345 images/s at every batch size), so such a figure was disturbed, by whatever did it
    (the reference in stop 28's run gave 389 at batch 8 on two threads against 597 at batch 1, and so made
    the binary target look met)."""
    curve = {int(b): v for b, v in ip["images_per_s_by_batch"].items()}
    low = [b for b, v in curve.items() if b > 1 and v < UNEVEN * curve[1]]
    return f"batch {low[0]}: {curve[low[0]]:.0f} images/s against batch 1's {curve[1]:.0f}" if low else ""


def reference(model_path: Path, images: np.ndarray, threads: int, args: argparse.Namespace, seconds: float) -> dict:
    """inproc(), measured again (after waiting for quiet) while other work disturbed it or its rates by batch
    size are uneven (see uneven()); the least disturbed try. A disturbed reference comes out low and would make
    the targets look easier."""
    tries: list[dict] = []
    for attempt in range(1 + args.retries):
        if attempt:
            why = uneven(tries[-1]) or f"other work used {tries[-1]['other_cpu_share']:.2f} cores"
            console.print(f"[yellow]in process ({threads} thread(s)) disturbed ({why}); measuring again[/]")
            wait_quiet(args.wait_quiet / 2)
        tries.append(inproc(model_path, images, threads, args.max_batch, seconds))
        if tries[-1]["other_cpu_share"] <= DISTURBED and not uneven(tries[-1]):
            break
    best = min(tries, key=lambda t: (bool(uneven(t)), t["other_cpu_share"]))
    best["attempts"] = len(tries)
    if why := uneven(best):
        best["uneven"] = why  # said in the results, not hidden: the targets against it are suspect
    return best


def expected_outputs(model_path: Path, images: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    s = load_session(model_path, threads)
    p, e = s.run(["probabilities", "embedding"], {"pixels": images})
    return {"probabilities": p, "embedding": e}


# --- metrics ------------------------------------------------------------------------------------

# Label values may hold braces (route="/v2/models/{name}/infer"): the label set runs to the last '}'.
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+([-+0-9.eEinfINFNa]+)(\s+\d+)?$")


def scrape(server: Server) -> dict[str, float]:
    """A server's Prometheus /metrics summed over label sets: {metric name: value}; {} if it has none."""
    if server.metrics_port is None:
        return {}
    try:
        status, _, body = http("GET", f"http://127.0.0.1:{server.metrics_port}/metrics", headers=server.headers,
                               timeout=10)
    except OSError:
        return {}
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


# (rows run, model calls) as each server counts them: Tandem, BentoML's adaptive batcher, Triton, and the
# probe histogram bench/serving/mlserver_app.py logs per ONNX Runtime call through MLServer's custom metrics.
BATCH_METRICS = (
    ("tandem_batch_size_sum", "tandem_batch_size_count"),
    ("bentoml_service_adaptive_batch_size_sum", "bentoml_service_adaptive_batch_size_count"),
    ("nv_inference_count", "nv_inference_exec_count"),
    ("bench_batch_rows_sum", "bench_batch_rows_count"),
)


def batch_stats(before: dict[str, float], after: dict[str, float], wall: float) -> dict:
    def d(k: str) -> float:
        return after.get(k, 0.0) - before.get(k, 0.0)

    found = [(rows, d(calls)) for rows, calls in BATCH_METRICS if d(calls) > 0]
    if not found:
        return {}
    rows, n = found[0]
    out = {"mean_batch": round(d(rows) / n, 2), "batches": int(n)}
    if rows.startswith("tandem"):
        out.update(tandem_stats(d, n, wall))
    if "bench_ort_seconds_total" in after:  # an experiment's probe (bench/work/serving/exp): pure ORT time
        out["ort_busy_probe"] = round(d("bench_ort_seconds_total") / wall, 3)
    return out


def tandem_stats(d: Callable[[str], float], n: float, wall: float) -> dict:
    return {
        "mean_inference_ms": round(d("tandem_inference_duration_seconds_sum") / n * 1000, 3),
        # Share of the wall time the model thread spent in ONNX Runtime calls: 1.0 = never idle.
        "model_busy": round(d("tandem_inference_duration_seconds_sum") / wall, 3),
        "mean_request_ms_server": round(d("tandem_request_duration_seconds_sum")
                                        / max(1.0, d("tandem_request_duration_seconds_count")) * 1000, 3),
        # Share of the model calls that were a lone request's, on the session with every core's threads.
        "lone_share": round(d("tandem_lone_calls_total") / n, 3),
    }


# --- one cell -----------------------------------------------------------------------------------

def drive(server: Server, requests_file: Path, concurrency: int, duration: float, warmup: float,
          max_requests: int, during: threading.Event | None = None) -> dict:
    """Run the load generator against ``server``; snapshot CPU (and Tandem's metrics) at START/END."""
    cmd = [sys.executable, str(APPS / "loadgen.py"), "--requests", str(requests_file), "--port", str(server.port),
           "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup),
           "--max-requests", str(max_requests)]
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    snaps: dict[str, tuple] = {}
    result = None
    assert gen.stdout is not None
    for raw in gen.stdout:
        line = raw.strip()
        if line in ("START", "END"):
            pids = server.pids()
            m = scrape(server)
            snaps[line] = (time.monotonic(), cpu_times(), cpu_seconds(pids), m)
            if during is not None:
                (during.set if line == "START" else during.clear)()
        elif line.startswith("{"):
            result = json.loads(line)
    gen.wait(60)
    if result is None:
        raise RuntimeError(f"load generator failed: {gen.stderr.read() if gen.stderr else ''}")
    if "START" in snaps and "END" in snaps:
        (w0, (b0, t0), s0, m0), (w1, (b1, t1), s1, m1) = snaps["START"], snaps["END"]
        wall = w1 - w0
        cores = os.cpu_count() or 1
        busy = (b1 - b0) / max(1e-9, t1 - t0) * cores  # cores busy, whole machine
        server_cores = (s1 - s0) / wall
        result["server_cpu_share"] = round(server_cores, 3)  # cores (1.0 = one core) of the server tree
        result["server_cpu_ms_per_req"] = round((s1 - s0) * 1000 / max(1, result["ok"]), 3)
        result["other_cpu_share"] = round(max(0.0, busy - server_cores - result["client_cpu_share"]), 3)
        result["disturbed"] = result["other_cpu_share"] > DISTURBED
        result.update(batch_stats(m0, m1, wall))
    return result


# --- the same cell under wrk --------------------------------------------------------------------

WRK_SCRIPT = APPS / "wrk_post.lua"
# A line of wrk's --latency distribution: "     99%   12.34ms".
WRK_LATENCY = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m|h)\s*$")
WRK_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def wrk_version() -> str | None:
    """wrk's version line, or None where it is not installed (`make bench-serving` installs Debian's)."""
    exe = shutil.which("wrk")
    if exe is None:
        return None
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)  # exits 1 after usage
    return ((r.stdout or r.stderr).splitlines() or ["wrk"])[0].strip()


def drive_wrk(server: Server, requests_file: Path, concurrency: int, duration: float, warmup: float,
              threads: int) -> dict:
    """wrk at ``concurrency`` connections (closed loop, keep-alive) posting the requests of
    ``requests_file`` through bench/serving/wrk_post.lua: a warm-up run (not recorded), then the
    measured one; its RESULT line and --latency distribution, with the CPU of wrk, the server and the
    rest of the machine over the measured run."""
    t = max(1, min(threads, concurrency))  # wrk refuses more threads than connections
    base = ["wrk", f"-t{t}", f"-c{concurrency}", "--timeout", "30s", "--latency", "-s", str(WRK_SCRIPT)]
    url = f"http://127.0.0.1:{server.port}"
    if warmup > 0:
        subprocess.run([*base, f"-d{max(1, round(warmup))}s", url, "--", str(requests_file)],
                       capture_output=True, check=False, timeout=warmup + 60)
    secs = max(1, round(duration))  # wrk takes whole seconds
    pids = server.pids()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0, (b0, t0), s0 = time.monotonic(), cpu_times(), cpu_seconds(pids)
    proc = subprocess.run([*base, f"-d{secs}s", url, "--", str(requests_file)],
                          capture_output=True, text=True, check=False, timeout=secs + 60)
    w1, (b1, t1), s1 = time.monotonic(), cpu_times(), cpu_seconds(pids)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = re.search(r"^RESULT (\{.*\})$", proc.stdout, re.MULTILINE)
    if proc.returncode or m is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-600:]} {proc.stderr[-600:]}")
    r = json.loads(m.group(1))
    dist: dict[str, float] = {}
    in_dist = False
    for line in proc.stdout.splitlines():
        if line.strip() == "Latency Distribution":
            in_dist = True
            continue
        hit = WRK_LATENCY.match(line) if in_dist else None
        if hit:
            dist[f"p{hit.group(1)}"] = round(float(hit.group(2)) * WRK_UNIT_MS[hit.group(3)], 3)
        elif in_dist:
            in_dist = False
    wall = r["duration_us"] / 1e6
    ok = r["requests"] - r["non_2xx"]
    client = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / (w1 - w0)
    server_cores = (s1 - s0) / (w1 - w0)
    busy = (b1 - b0) / max(1e-9, t1 - t0) * (os.cpu_count() or 1)
    other = max(0.0, busy - server_cores - client)
    return {
        "concurrency": concurrency, "threads": t,
        "requests": r["requests"], "ok": ok, "errors": r["errors"], "non_2xx": r["non_2xx"],
        "socket_errors": {k: r[k] for k in ("connect", "read", "write", "timeout")},
        "wall_s": round(wall, 3),
        "rps": round(ok / wall, 2) if wall > 0 else 0.0,
        # Percentiles of every answer wrk received (wrk times non-2xx answers too; errors says how many).
        "p50_ms": round(r["p50_us"] / 1000, 3) if r["requests"] else None,
        "p90_ms": round(r["p90_us"] / 1000, 3) if r["requests"] else None,
        "p99_ms": round(r["p99_us"] / 1000, 3) if r["requests"] else None,
        "max_ms": round(r["max_us"] / 1000, 3) if r["requests"] else None,
        "mean_ms": round(r["mean_us"] / 1000, 3) if r["requests"] else None,
        "latency_distribution_ms": dist,  # wrk's own --latency table, as printed
        "client_cpu_share": round(client, 4),
        "server_cpu_share": round(server_cores, 3),
        "server_cpu_ms_per_req": round((s1 - s0) * 1000 / max(1, ok), 3),
        "other_cpu_share": round(other, 3),
        "disturbed": other > DISTURBED,
    }


# --- profile (--profile) ------------------------------------------------------------------------

PYSPY = VENVS / "tools" / "bin" / "py-spy"


def profile_cell(srv: Server, requests_file: Path, concurrency: int, seconds: float, out: Path) -> dict:
    """Drive the server while py-spy samples it (all threads, native frames off); summarise where its
    CPU goes: the leaf functions and a few inclusive buckets. Not part of the measured numbers."""
    if not PYSPY.exists():
        return {"error": f"{PYSPY} missing: python3 -m venv bench/work/venvs/tools && "
                         "bench/work/venvs/tools/bin/pip install py-spy==0.4.3"}
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen([str(PYSPY), "record", "-p", str(srv.proc.pid), "-d", str(int(seconds) + 1), "-r", "250",
                            "-f", "raw", "-o", str(out), "--nonblocking", "--threads"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    r = drive(srv, requests_file, concurrency, seconds, 0.2, 10**9)
    spy.wait(60)
    return {"rps_while_profiled": r["rps"], **summarise_profile(out)}


BUCKETS = {
    "onnxruntime run (model thread)": ("run (onnxruntime",),
    "JSON parse (orjson.loads)": ("loads (tandem/protocol/jsonbody.py",),
    "JSON list -> numpy (from_json_values)": ("from_json_values (",),
    "response encode (orjson.dumps)": ("encode_infer_response (",),
    "request parse (parse_infer_request)": ("parse_infer_request (",),
    "read body": ("read_body (",),
    "auth": ("authenticate (",),
    "rate limit": ("check (tandem/server/ratelimit.py",),
    "metrics (prometheus_client)": ("prometheus_client",),
    "access log": ("access_log", "logging/__init__.py"),
    "Observe middleware total": ("__call__ (tandem/server/observe.py",),
    "batcher loop (excl. model)": ("_loop (tandem/server/batching.py",),
    "uvicorn/httptools protocol": ("httptools_impl.py",),
    "starlette routing": ("starlette/routing.py",),
    "asyncio/uvloop machinery": ("asyncio/", "uvloop"),
}


def summarise_profile(path: Path) -> dict:
    leaf: dict[str, int] = {}
    incl = dict.fromkeys(BUCKETS, 0)
    threads: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            k = int(n)
            total += k
            frames = stack.split(";")
            threads[frames[0][:60]] = threads.get(frames[0][:60], 0) + k
            leaf[frames[-1]] = leaf.get(frames[-1], 0) + k
            for b, needles in BUCKETS.items():
                if any(nd in stack for nd in needles):
                    incl[b] += k
    if not total:
        return {"error": f"no samples in {path}"}
    top = sorted(leaf.items(), key=lambda kv: -kv[1])[:25]
    return {"samples": total, "file": str(path),
            "threads": {t: round(c / total, 3) for t, c in sorted(threads.items(), key=lambda kv: -kv[1])},
            "inclusive_share": {b: round(c / total, 3) for b, c in incl.items()},
            "top_leaf_share": {f: round(c / total, 3) for f, c in top}}


# --- servers ------------------------------------------------------------------------------------

def peer_env(args: argparse.Namespace, model_path: Path, model: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "BENCH_MODEL": str(model_path), "BENCH_MODEL_NAME": model, "BENCH_ORT_THREADS": str(args.ort_threads),
        "BENCH_MAX_BATCH": str(args.max_batch), "BENCH_MAX_DELAY_MS": str(args.max_delay_ms),
        "BENCH_HOST": "127.0.0.1", "BENCH_PORT": str(port), "PYTHONPATH": str(APPS),
        "BENTOML_DO_NOT_TRACK": "true", "BENTOML_HOME": str(WORK / "bentoml_home"),
        "PYTRITON_HOME": str(WORK / "pytriton_home"),
        "OMP_NUM_THREADS": str(max(1, args.ort_threads)),
        "BENCH_BENTOML_WORKERS": str(args.bentoml_workers),
        "BENCH_MLSERVER_WORKERS": str(args.mlserver_workers), "BENCH_MLSERVER_DIR": str(WORK / "mlserver"),
    })
    return env


def start_peer(peer: str, args: argparse.Namespace, model_path: Path, model: str) -> Server:
    py = VENVS / peer / "bin" / "python"
    if not py.exists():
        raise FileNotFoundError(f"{py} missing: run bench/serving/setup_peers.sh (make bench-serving does)")
    port = free_port(3 if peer in ("triton", "mlserver") else 1)  # + gRPC and metrics ports
    env = peer_env(args, model_path, model, port)
    if peer == "bentoml":
        cmd = [str(VENVS / peer / "bin" / "bentoml"), "serve", "bentoml_service:CelebMatch",
               "--host", "127.0.0.1", "--port", str(port)]
        ready, timeout = "/readyz", 120
    elif peer == "litserve":
        cmd = [str(py), "litserve_app.py"]
        ready, timeout = "/health", 120
    else:  # triton, kserve, mlserver: OIP v2 servers with its model readiness route
        cmd = [str(py), f"{peer}_app.py"]
        ready, timeout = f"/v2/models/{model}/ready", 180
    srv = start(peer, cmd, env, port, APPS)
    srv.metrics_port = {"bentoml": port, "litserve": None, "triton": port + 2, "kserve": port,
                        "mlserver": port + 2}[peer]
    try:
        srv.wait_ready(ready, timeout)
    except BaseException:
        srv.stop()
        raise
    return srv


def peer_version(peer: str) -> dict:
    py = VENVS / peer / "bin" / "python"
    pkgs = {"bentoml": ["bentoml"], "litserve": ["litserve", "fastapi", "uvicorn"],
            "triton": ["nvidia-pytriton"], "kserve": ["kserve", "fastapi", "uvicorn"],
            "mlserver": ["mlserver", "fastapi", "uvicorn"]}[peer] + ["onnxruntime", "numpy"]
    code = f"import importlib.metadata as m, json; print(json.dumps({{p: m.version(p) for p in {pkgs!r}}}))"
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True).stdout
    v = json.loads(out)
    if peer == "triton":
        v["tritonserver"] = "2.51.0 (bundled in nvidia-pytriton 0.7.0)"
    return v


class TandemHome:
    """A fresh TANDEM_HOME with the bundle pushed ``--swap-versions`` times (default twice: versions 1
    and 2), production -> the first, a predict key and an admin key (for /metrics)."""

    def __init__(self, bundle: Path, args: argparse.Namespace) -> None:
        self.home = WORK / "home"
        shutil.rmtree(self.home, ignore_errors=True)
        self.env = {**os.environ, "TANDEM_HOME": str(self.home), "TANDEM_MAX_BATCH_SIZE": str(args.max_batch),
                    "TANDEM_MAX_DELAY_MS": str(args.max_delay_ms), "TANDEM_ORT_THREADS": str(args.ort_threads),
                    "TANDEM_RATE_LIMIT_PER_S": "1000000", "TANDEM_RATE_LIMIT_BURST": "1000000"}
        self.env.pop("TANDEM_DATABASE_URL", None)
        self.env.pop("TANDEM_REDIS_URL", None)
        self.bundle = bundle
        self.versions = [self.cli("push", str(bundle), "--force", "--json")["version"]
                         for _ in range(max(2, args.swap_versions))]
        self.name = Bundle.load(bundle).manifest.name
        self.cli("alias", self.name, "production", str(self.versions[0]))
        self.key = self.cli("keys", "create", "--scope", "predict", "--json")["key"]
        admin = self.cli("keys", "create", "--scope", "admin", "--json")["key"]
        self.admin_headers = {"Authorization": f"Bearer {admin}"}

    def cli(self, *argv: str) -> dict:
        r = subprocess.run([str(TANDEM), *argv], env=self.env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"tandem {' '.join(argv)} failed ({r.returncode}): {r.stderr[-800:]}")
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(r.stdout)
        return {}

    def serve(self, args: argparse.Namespace) -> Server:
        port = free_port()
        cmd = [str(TANDEM), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
               "--max-batch-size", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms)]
        srv = start("tandem", cmd, self.env, port, ROOT)
        srv.headers = self.admin_headers
        srv.metrics_port = port
        try:
            srv.wait_ready("/v2/health/ready", 120)
            srv.wait_ready(f"/v2/models/{self.name}/ready", 60)
        except BaseException:
            srv.stop()
            raise
        return srv


class AliasMover(threading.Thread):
    """While ``active`` is set, move ``production`` between the two versions every ``interval`` s
    (through the registry library: the same call `tandem alias` makes, without a CLI process per move
    competing for the two cores; --swap-cli runs the CLI instead)."""

    def __init__(self, home: TandemHome, versions: list[int], interval: float, active: threading.Event,
                 use_cli: bool) -> None:
        super().__init__(daemon=True)
        self.home, self.interval, self.active, self.use_cli = home, interval, active, use_cli
        self.versions = versions  # versions[0] is production's version now
        self.current = versions[0]
        self.moves = 0
        self.done = threading.Event()
        self.error = ""

    def run(self) -> None:
        from tandem.registry.registry import Registry
        from tandem.settings import Settings

        reg = None if self.use_cli else Registry.open(Settings(home=self.home.home))
        versions = self.versions
        target = 1
        try:
            while not self.done.is_set():
                if not self.active.wait(0.05):
                    continue
                v = versions[target]
                if reg is not None:
                    reg.set_alias(self.home.name, "production", v)
                else:
                    self.home.cli("alias", self.home.name, "production", str(v))
                self.moves += 1
                self.current = v
                target = (target + 1) % len(versions)
                self.done.wait(self.interval)
        except Exception as e:  # reported in the results
            self.error = f"{type(e).__name__}: {e}"
        finally:
            if reg is not None:
                reg.close()


def swap_test(srv: Server, home: TandemHome, reqs: Path, args: argparse.Namespace) -> dict:
    """p99 at concurrency 16 steady, then while ``production`` moves every ``--swap-interval`` s between
    its version and version(s) never served before (so each try loads and warms up at least one new
    version under load, then swaps between loaded ones). A disturbed try is repeated with new versions."""
    current, fresh = home.versions[0], home.versions[1:]
    tries = []
    for attempt in range(1 + args.retries):
        if attempt:
            console.print("[yellow]  swap test disturbed by other work; measuring again with new versions[/]")
            wait_quiet(args.wait_quiet / 2, exclude=srv.pids())
            fresh = [home.cli("push", str(home.bundle), "--force", "--json")["version"] for _ in range(len(fresh))]
        versions = [current, *fresh]
        console.print(f"  swap test: tandem_binary c16, steady, then production moving through {versions} "
                      f"every {args.swap_interval} s")
        steady = drive(srv, reqs, 16, args.duration, args.warmup, args.max_requests)
        active = threading.Event()
        mover = AliasMover(home, versions, args.swap_interval, active, args.swap_cli)
        mover.start()
        m0 = scrape(srv)
        log0 = len(srv.log.read_text(errors="replace"))
        swap = drive(srv, reqs, 16, args.duration, args.warmup, args.max_requests, during=active)
        mover.done.set()
        mover.join(10)
        current = mover.current
        m1 = scrape(srv)
        log1 = srv.log.read_text(errors="replace")[log0:]
        loads = re.findall(r"loaded \S+ v\d+ in \d+ ms", log1)
        info = {"steady": steady, "during_swaps": swap, "moves": mover.moves, "errors": swap["errors"],
                "mover_error": mover.error,
                "server_swaps_counted": m1.get("tandem_alias_swaps_total", 0) - m0.get("tandem_alias_swaps_total", 0),
                "via": "tandem alias CLI" if args.swap_cli else "Registry.set_alias (library, what `tandem alias` calls)",
                "interval_s": args.swap_interval, "versions": versions,
                # New versions loaded and warmed up (in the background) while under load:
                "loads_during": len(loads), "loads": loads}
        console.print(f"  steady p99 {steady['p99_ms']} ms; during {mover.moves} moves p99 {swap['p99_ms']} ms, "
                      f"errors {swap['errors']}, swaps counted by the server {info['server_swaps_counted']:.0f}, "
                      f"versions loaded meanwhile {len(loads)}")
        tries.append(info)
        if not steady.get("disturbed") and not swap.get("disturbed"):
            break
    best = min(tries, key=lambda t: t["steady"].get("other_cpu_share", 0) + t["during_swaps"].get("other_cpu_share", 0))
    best["attempts"] = len(tries)
    return {"steady_p99_ms": best["steady"]["p99_ms"], "swap_p99_ms": best["during_swaps"]["p99_ms"], "swap": best}


# --- report -------------------------------------------------------------------------------------

def fmt(v: object, nd: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def print_table(res: dict) -> None:
    t = Table(title=f"serving celebmatch — {res['machine']['cores']} cores, batch ≤ {res['settings']['max_batch']}, "
                    f"{res['settings']['ort_threads']} ORT thread(s)")
    for col in ("target", "c", "req/s", "p50 ms", "p99 ms", "errors", "mean batch", "model busy", "client CPU",
                "server CPU", "srv ms/req", "other CPU"):
        t.add_column(col, justify="left" if col == "target" else "right")
    for name in TARGETS:
        cells = res.get(name)
        if not cells:
            continue
        for c, cell in cells.items():
            if not isinstance(cell, dict) or "rps" not in cell:
                continue
            t.add_row(name, c, fmt(cell["rps"]), fmt(cell["p50_ms"]), fmt(cell["p99_ms"]), str(cell["errors"]),
                      fmt(cell.get("mean_batch"), 2), fmt(cell.get("model_busy"), 2), fmt(cell.get("client_cpu_share"), 2),
                      fmt(cell.get("server_cpu_share"), 2), fmt(cell.get("server_cpu_ms_per_req"), 2),
                      fmt(cell.get("other_cpu_share"), 2) + ("*" if cell.get("disturbed") else ""))
    console.print(t)
    if res.get("wrk"):
        w = Table(title=f"the same cells under wrk ({res['settings'].get('wrk', {}).get('version', 'wrk')})")
        for col in ("target", "c", "req/s", "p50 ms", "p99 ms", "errors", "wrk CPU", "server CPU", "other CPU"):
            w.add_column(col, justify="left" if col == "target" else "right")
        for name in TARGETS:
            for c, cell in res["wrk"].get(name, {}).items():
                w.add_row(name, c, fmt(cell["rps"]), fmt(cell["p50_ms"]), fmt(cell["p99_ms"]), str(cell["errors"]),
                          fmt(cell["client_cpu_share"], 2), fmt(cell["server_cpu_share"], 2),
                          fmt(cell["other_cpu_share"], 2) + ("*" if cell.get("disturbed") else ""))
        console.print(w)
    console.print(f"CPU columns are cores (1.00 = one whole core) during the measured phase; * = other processes used "
                  f"more than {DISTURBED} cores meanwhile (numbers disturbed). model busy = share of the time Tandem's "
                  "model thread spent in ONNX Runtime.")
    ip = res["inproc"]
    console.print(f"in process: batch 1 {ip['b1_ms']} ms (median); batch {ip['batch']} {ip['bN_rps']} images/s; "
                  f"by batch {ip['images_per_s_by_batch']}")
    if res.get("swap_p99_ms") is not None:
        console.print(f"swap test (tandem_binary c16): steady p99 {res['steady_p99_ms']} ms, during alias moves "
                      f"{res['swap_p99_ms']} ms ({res['swap']['moves']} moves, errors {res['swap']['errors']})")
    tt = Table(title="targets")
    for col in ("target", "measured", "needed", "met"):
        tt.add_column(col)
    for k, v in res["targets"].items():
        tt.add_row(k, fmt(v.get("measured"), 2), fmt(v.get("needed"), 2),
                   "—" if v["met"] is None else ("[green]yes[/]" if v["met"] else "[red]no[/]"))
    console.print(tt)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in TARGETS if res.get(n)]
    cs = res["settings"]["concurrency"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    w = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        cells = res[n]
        xs = [j + i * w for j in range(len(cs))]
        a.bar(xs, [cells.get(f"c{c}", {}).get("rps") or 0 for c in cs], w, label=n)
        b.bar(xs, [cells.get(f"c{c}", {}).get("p99_ms") or 0 for c in cs], w, label=n)
    for ax, title in ((a, "throughput (requests/s, one image each)"), (b, "p99 latency (ms, log)")):
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(cs))], [f"c={c}" for c in cs])
        ax.set_title(title)
    a.axhline(res["inproc"]["bN_rps"], color="k", ls="--", lw=1, label=f"in process, batch {res['inproc']['batch']}")
    b.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    b.yaxis.set_major_formatter(ScalarFormatter())
    a.legend(fontsize=8)
    fig.suptitle(f"celebmatch over HTTP on {res['machine']['cores']} CPU cores (client on the same cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(res: dict) -> dict:
    m, ip = {t: res[t] for t in TARGETS if t in res}, res["inproc"]

    def cell(t: str, c: str, k: str) -> float | None:
        return (m.get(t) or {}).get(c, {}).get(k)

    # The references are what this CPU can do in process at its best, over both thread settings
    # measured (the server may use both cores through several single-threaded calls in flight).
    alt = ip.get("with_other_threads") or {}
    best_rps = max(ip["bN_rps"], alt.get("bN_rps", 0.0))
    best_b1 = min(ip["b1_ms"], alt.get("b1_ms", float("inf")))
    out = {}
    tb16 = cell("tandem_binary", "c16", "rps")
    # Issue 21's targets (they raised issue 13's 0.8x and 1.5x).
    out["tandem_binary_c16_rps >= 0.9 x best inproc bN_rps"] = {
        "measured": tb16, "needed": round(0.9 * best_rps, 1), "same_threads_inproc_bN_rps": ip["bN_rps"],
        "met": None if tb16 is None else tb16 >= 0.9 * best_rps}
    for label, rows in (("", m), (" (wrk)", res.get("wrk") or {})):
        peers = {p: rows[p]["c16"]["rps"] for p in PEERS if (rows.get(p) or {}).get("c16", {}).get("rps") is not None}
        best = max(peers.values()) if peers else None
        tj16 = (rows.get("tandem_json") or {}).get("c16", {}).get("rps")
        if label and tj16 is None and not peers:
            continue  # no wrk cells
        out[f"tandem_json_c16_rps >= 2 x best peer c16 rps{label}"] = {
            "measured": tj16, "needed": None if best is None else round(2 * best, 1),
            "best_peer": max(peers, key=lambda k: peers[k]) if peers else None,
            "met": None if tj16 is None or best is None else tj16 >= 2 * best}
    tb1 = cell("tandem_binary", "c1", "p50_ms")
    out["tandem_binary_c1_p50_ms <= best inproc b1_ms + 2"] = {
        "measured": tb1, "needed": round(best_b1 + 2, 3), "same_threads_inproc_b1_ms": ip["b1_ms"],
        "met": None if tb1 is None else tb1 <= best_b1 + 2}
    # Issue 21 tightened issue 13's +2 ms to +1 ms; under wrk too, whose C client adds less of its own.
    for label, rows in (("", m), (" (wrk)", res.get("wrk") or {})):
        p50 = (rows.get("tandem_binary") or {}).get("c1", {}).get("p50_ms")
        if label and p50 is None:
            continue
        out[f"tandem_binary_c1_p50_ms <= best inproc b1_ms + 1{label}"] = {
            "measured": p50, "needed": round(best_b1 + 1, 3), "met": None if p50 is None else p50 <= best_b1 + 1}
    sw, st = res.get("swap_p99_ms"), res.get("steady_p99_ms")
    out["swap_p99_ms <= 1.5 x steady_p99_ms"] = {
        "measured": sw, "needed": None if st is None else round(1.5 * st, 2),
        "met": None if sw is None or st is None else sw <= 1.5 * st}
    return out


# --- main ---------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="celebmatch bundle folder (default: tandem-demo/bundle, the accuracy "
                                    "benchmark's, or a quick one trained now)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s per cell, short warm-ups")
    p.add_argument("--duration", type=float, default=12.0, help="measured seconds per (target, concurrency)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--max-requests", type=int, default=20_000, help="measured requests per cell at most")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--max-batch", type=int, default=8, help="max batch size of every server (and in-process bN)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="batch wait of every server")
    p.add_argument("--ort-threads", type=int, default=1, help="ONNX Runtime intra-op threads, every server")
    p.add_argument("--workers", type=int, default=1, help="tandem serve --workers")
    p.add_argument("--bentoml-workers", type=int, default=1, help="BentoML service workers (processes)")
    p.add_argument("--mlserver-workers", type=int, default=1, help="MLServer parallel_workers (inference "
                   "processes beside its HTTP process; 1 is MLServer's default)")
    p.add_argument("--no-wrk", action="store_true", help="skip the wrk cells (the results' `wrk` section)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (at most the connections); one "
                   "C thread drives thousands of requests/s and leaves the cores to the server")
    p.add_argument("--images", type=int, default=64, help="distinct LFW photos cycled through")
    p.add_argument("--swap-interval", type=float, default=1.0, help="seconds between alias moves")
    p.add_argument("--swap-versions", type=int, default=2, help="versions the alias moves through (2: back "
                   "and forth, loaded once each; more: most moves load and warm up a version never served before)")
    p.add_argument("--swap-cli", action="store_true", help="move the alias with the `tandem alias` CLI")
    p.add_argument("--no-swap", action="store_true")
    p.add_argument("--profile", action="store_true", help="also sample Tandem's server with py-spy at the top "
                   "concurrency (bench/work/venvs/tools); extra cells, not in the measured numbers")
    p.add_argument("--wait-quiet", type=float, default=120.0, help="before each target, wait up to this many "
                   "seconds for other work on the machine to stop (0: do not wait)")
    p.add_argument("--retries", type=int, default=1, help="measure a cell again (after waiting for quiet) when "
                   "other processes disturbed it; the least disturbed try is kept")
    p.add_argument("--out", default=str(RESULTS / "serving.json"))
    args = p.parse_args()
    if args.quick:
        args.duration, args.warmup = min(args.duration, 3.0), min(args.warmup, 0.5)
        args.wait_quiet, args.retries = min(args.wait_quiet, 5.0), 0
    concurrency = [int(c) for c in args.concurrency.split(",")]
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in TARGETS:
            p.error(f"unknown target {t}; choose from {', '.join(TARGETS)}")
    WORK.mkdir(parents=True, exist_ok=True)

    console.rule("[bold]serving benchmark")
    machine = machine_info()
    console.print(f"machine: {machine['cores']} cores ({machine['cpu']}), load average {machine['loadavg_start']}, "
                  f"busy before start {machine['busy_before_start']:.0%}")
    bundle_dir = find_bundle(args.bundle)
    bundle = Bundle.load(bundle_dir)
    model = bundle.manifest.name
    model_path = bundle.model_path("fp32")
    images = load_images(bundle, args.images)
    console.print(f"bundle {bundle_dir} (model {model}, {model_path.name}); {len(images)} LFW photos")

    res: dict = {
        "settings": {"max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms, "ort_threads": args.ort_threads,
                     "tandem_workers": args.workers, "bentoml_workers": args.bentoml_workers,
                     "mlserver_workers": args.mlserver_workers, "swap_versions": args.swap_versions,
                     "duration_s": args.duration, "warmup_s": args.warmup,
                     "max_requests": args.max_requests, "concurrency": concurrency, "images": len(images),
                     "quick": args.quick, "model_file": model_path.name, "bundle": str(bundle_dir)},
        "machine": machine,
        "what_each_got": {t: WHAT_EACH_GOT[t] for t in targets},
        "versions": {},
        "notes": [],
    }

    wrk = None if args.no_wrk else wrk_version()
    if not args.no_wrk:
        if wrk is None:
            res["notes"].append("wrk is not installed (apt-get install wrk; make bench-serving does): no `wrk` section")
        else:
            res["settings"]["wrk"] = {
                "version": wrk, "threads": f"min({args.wrk_threads}, connections)", "script": "bench/serving/wrk_post.lua",
                "duration_s": max(1, round(args.duration)), "warmup_s": max(1, round(args.warmup)), "timeout_s": 30,
                "body": "byte for byte the requests the load generator sends each target (what_each_got)"}

    console.rule("in process (ONNX Runtime)")
    # The targets' references: measured on a quiet machine too, or other work makes them come out low.
    res.setdefault("busy_before_target", {})["inproc"] = wait_quiet(args.wait_quiet)
    res["inproc"] = reference(model_path, images, args.ort_threads, args, 6.0 if not args.quick else 1.5)
    other = 2 if args.ort_threads == 1 else 1
    alt = reference(model_path, images, other, args, 3.0 if not args.quick else 0.75)
    res["inproc"]["with_other_threads"] = {k: alt[k] for k in ("threads", "b1_ms", "bN_rps", "images_per_s_by_batch",
                                                               "other_cpu_share", "attempts", "uneven") if k in alt}
    console.print(res["inproc"])
    expect = expected_outputs(model_path, images[:8], args.ort_threads)
    answers: dict[str, list[np.ndarray]] = {}  # each target's answers to the validation photos

    def measure(label: str, srv: Server, cell: Callable[[], dict]) -> dict:
        """One cell, measured again (after waiting for quiet) while other work disturbed it."""
        tries: list[dict] = []
        for attempt in range(1 + args.retries):
            if attempt:
                console.print(f"[yellow]disturbed (other work used {tries[-1]['other_cpu_share']:.2f} cores); "
                              "measuring again[/]")
                wait_quiet(args.wait_quiet / 2, exclude=srv.pids())
            console.print(f"  {label} …", end=" ")
            tries.append(cell())
            if not tries[-1].get("disturbed"):
                break
        r = min(tries, key=lambda t: t.get("other_cpu_share", 0))
        r["attempts"] = len(tries)
        console.print(f"{r['rps']:.1f} req/s, p50 {fmt(r['p50_ms'])} ms, p99 {fmt(r['p99_ms'])} ms, "
                      f"errors {r['errors']}" + (f", mean batch {r['mean_batch']}" if "mean_batch" in r else "")
                      + f", client CPU {r['client_cpu_share']:.2f}, other {r.get('other_cpu_share', 0):.2f}")
        if r.get("first_error"):
            console.print(f"    [red]first error[/]: {r['first_error']}")
        return r

    def run_cells(name: str, srv: Server, target: Target) -> None:
        reqs = target.write(srv.port)
        diff = validate(target, srv.port, images, expect, answers=answers.setdefault(name, []))
        cells: dict = {"validated_max_abs_diff": diff, "startup_s": srv.started_s}
        for c in concurrency:
            cells[f"c{c}"] = measure(f"{name} c={c}", srv, partial(
                drive, srv, reqs, c, args.duration, args.warmup, args.max_requests))
        res[name] = cells
        if wrk is None:
            return
        wrk_reqs = target.write_wrk(srv.port)
        rows: dict = {}
        try:
            for c in concurrency:
                rows[f"c{c}"] = measure(f"{name} c={c} (wrk)", srv, partial(
                    drive_wrk, srv, wrk_reqs, c, args.duration, args.warmup, args.wrk_threads))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            msg = f"{name}: wrk failed: {e}"
            console.print(f"[red]{msg}[/]")
            res["notes"].append(msg)
        res.setdefault("wrk", {})[name] = rows

    # Tandem: one server, both encodings, then the swap test.
    if any(t.startswith("tandem") for t in targets) or not args.no_swap:
        console.rule("tandem")
        res.setdefault("busy_before_target", {})["tandem"] = wait_quiet(args.wait_quiet)
        home = TandemHome(bundle_dir, args)
        all_targets = make_targets(images, model, home.key)
        srv = home.serve(args)
        srv.headers = home.admin_headers
        try:
            res["versions"]["tandem"] = {"tandem": _version("tandem"), "onnxruntime": _version("onnxruntime"),
                                         "starlette": _version("starlette"), "uvicorn": _version("uvicorn")}
            for name in ("tandem_binary", "tandem_json"):
                if name in targets:
                    run_cells(name, srv, all_targets[name])
                    if args.profile:
                        c = max(concurrency)
                        console.print(f"  profiling {name} c={c} with py-spy …")
                        prof = profile_cell(srv, all_targets[name].write(srv.port), c, args.duration,
                                            WORK / "profile" / f"{name}_c{c}.txt")
                        res.setdefault("profile", {})[f"{name}_c{c}"] = prof
                        console.print(prof)
            if not args.no_swap:
                reqs = all_targets["tandem_binary"].write(srv.port)
                res.update(swap_test(srv, home, reqs, args))
        finally:
            srv.stop()
        shutil.copy(srv.log, WORK / "logs" / "tandem.last.log")

    for peer in PEERS:
        if peer not in targets:
            continue
        console.rule(peer)
        res.setdefault("busy_before_target", {})[peer] = wait_quiet(args.wait_quiet)
        try:
            res["versions"][peer] = peer_version(peer)
            srv = start_peer(peer, args, model_path, model)
        except Exception as e:
            msg = f"{peer} not measured: {e}"
            console.print(f"[red]{msg}[/]")
            res["notes"].append(msg)
            continue
        try:
            all_targets = make_targets(images, model, "")
            run_cells(peer, srv, all_targets[peer])
        except Exception as e:
            msg = f"{peer} failed during the run: {e}"
            console.print(f"[red]{msg}[/]")
            res["notes"].append(msg)
        finally:
            srv.stop()

    # Every server against Tandem's JSON route on the same photos (each is also checked against ONNX Runtime).
    ref = answers.get("tandem_json") or answers.get("tandem_binary")
    if ref:
        res["max_abs_diff_vs_tandem"] = {t: round(max(float(np.abs(a - b).max()) for a, b in zip(v, ref, strict=True)), 9)
                                         for t, v in answers.items() if v and len(v) == len(ref)}
    measured = {t: res[t] for t in TARGETS if t in res}
    cells = [c for t in measured.values() for k, c in t.items() if k.startswith("c") and isinstance(c, dict)]
    res["client_cpu_share"] = {
        "max": max((c["client_cpu_share"] for c in cells), default=None),
        "by_target_c16": {t: v.get("c16", {}).get("client_cpu_share") for t, v in measured.items()},
        "meaning": "load generator CPU seconds / wall seconds of the measured phase (1.0 = one whole core)",
    }
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["machine"]["max_other_cpu_share"] = max((c.get("other_cpu_share", 0) for c in cells), default=None)
    res["machine"]["disturbed_cells"] = [f"{t}.{k}" for t, v in measured.items() for k, c in v.items()
                                         if isinstance(c, dict) and c.get("disturbed")]
    res["machine"]["disturbed_cells"] += [f"wrk.{t}.{k}" for t, v in res.get("wrk", {}).items()
                                          for k, c in v.items() if c.get("disturbed")]
    if res["machine"]["disturbed_cells"]:
        res["notes"].append(f"other processes used more than {DISTURBED} cores during "
                            f"{len(res['machine']['disturbed_cells'])} cell(s) (other_cpu_share): their numbers are low")
    for ref in (res["inproc"], res["inproc"]["with_other_threads"]):
        if ref["other_cpu_share"] > DISTURBED:
            res["notes"].append(f"other processes used {ref['other_cpu_share']:.2f} cores while ONNX Runtime ran in "
                                f"process on {ref['threads']} thread(s): that reference is low, its targets easier")
    res["targets"] = evaluate(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError, json.JSONDecodeError):
        before = json.loads(out.read_text())
        res.update({k: before[k] for k in KEPT if k in before})
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(out)
    png = out.with_suffix(".png")
    plot(res, png)
    console.rule("results")
    print_table(res)
    for n in res["notes"]:
        console.print(f"[yellow]note:[/] {n}")
    console.print(f"wrote {out} and {png}")


# Keys other scripts add to serving.json (bench/serving_profile.py), kept when this one rewrites it.
KEPT = ("stack_cpu_ms", "stack_profile")


def _version(pkg: str) -> str:
    import importlib.metadata as md

    with contextlib.suppress(md.PackageNotFoundError):
        return md.version(pkg)
    return "?"


if __name__ == "__main__":
    main()
