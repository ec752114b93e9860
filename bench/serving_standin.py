"""The serving stack's CPU alone: `tandem serve` whose model answers at once, against a bare server.

    .venv/bin/python bench/serving_standin.py [--duration 8] [--repeats 3]

bench/serving_profile.py finds `stack_cpu_ms` by subtracting the model's CPU (2.9-3.2 ms a request) from
the server's, so a change of 0.02 ms in the stack hides in the model's run-to-run spread (±0.05 ms and more
on a busy minute). Here every model call is a stand-in that returns zeros of the outputs' shapes at once,
so all of the server's CPU is the stack's, and a change shows. Three servers, each driven at
concurrency 16 by bench/serving/loadgen.py with the OIP binary requests of bench/serving.py:

- `tandem`: `tandem serve`'s own code path (uvicorn with the guarded protocol, the app, auth, limits,
  metrics, the batcher and its threads) with the access log on, as `tandem serve` runs by default;
- `tandem_no_access_log`: the same with TANDEM_ACCESS_LOG=0;
- `bare`: an asyncio protocol with httptools' parser (uvloop) that answers every request with a canned
  reply of the same size: what sockets and parsing alone cost, the floor under any Python server.

The stand-in is this script's (the model's ``Batcher`` gets it in place of ONNX Runtime, in the server
process only): nothing in Tandem can serve without a model. Server CPU per request is utime + stime of
every thread of the server (/proc) over the measured phase / answered requests; the servers run side by
side, loaded one at a time, round by round, and the median of --repeats rounds is kept. Writes bench/results/serving_standin.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tandem import atomic

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "serving_standin.json"
BARE_BODY = 948  # bytes of the OIP binary answer Tandem gives for one photo of the serving bundle
VARIANTS = ("tandem", "tandem_no_access_log", "bare")


def _serve_tandem(port: int) -> None:
    import numpy as np

    from tandem.cli.serve import run_uvicorn
    from tandem.server import batching
    from tandem.settings import get_settings

    init = batching.Batcher.__init__
    outputs: dict[str, tuple[int, ...]] = json.loads(os.environ["STANDIN_OUTPUTS"])

    def stand_in(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(feeds.values())).shape[0]
        return {name: np.zeros((rows, *shape), np.float32) for name, shape in outputs.items()}

    def with_stand_in(self: batching.Batcher, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        self._run = self._run_lone = stand_in

    batching.Batcher.__init__ = with_stand_in  # type: ignore[method-assign]
    run_uvicorn(get_settings(), "127.0.0.1", port, "warning")


def _serve_bare(port: int) -> None:
    import httptools
    import uvloop

    body = b"\0" * BARE_BODY
    reply = (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ninference-header-content-length: 200\r\n"
             b"content-length: " + str(len(body)).encode() + b"\r\nx-request-id: " + b"0" * 32 +
             b"\r\nx-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\n\r\n" + body)

    class Bare(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, chunk: bytes) -> None:
            self.body.append(chunk)

        def on_message_complete(self) -> None:
            b"".join(self.body)  # as a server that reads the request would
            self.body = []
            self.transport.write(reply)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def _run(sb: Any, srv: Any, reqs: Path, args: argparse.Namespace) -> dict:
    """One loaded run of ``srv`` (bench/serving.py's Server): requests/s, errors and the server's CPU a request
    over the measured phase."""
    gen = subprocess.Popen([sys.executable, str(sb.APPS / "loadgen.py"), "--requests", str(reqs),
                            "--port", str(srv.port), "--concurrency", str(args.concurrency),
                            "--duration", str(args.duration), "--warmup", str(args.warmup)],
                           stdout=subprocess.PIPE, text=True)
    assert gen.stdout is not None
    snaps: dict[str, float] = {}
    result = None
    for raw in gen.stdout:
        line = raw.strip()
        if line in ("START", "END"):
            snaps[line] = sb.cpu_seconds([srv.proc.pid])  # the process's threads, ended ones too
        elif line.startswith("{"):
            result = json.loads(line)
    gen.wait(60)
    if result is None or len(snaps) != 2 or result["ok"] == 0:
        raise RuntimeError(f"the load generator failed against {srv.name}; see {srv.log}")
    return {"rps": round(result["rps"], 1), "errors": result["errors"],
            "server_cpu_ms_per_req": round((snaps["END"] - snaps["START"]) / result["ok"] * 1e3, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=5, help="rounds: runs per server (the median is kept)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--serve", choices=("tandem", "bare"), help=argparse.SUPPRESS)  # the server process itself
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        (_serve_tandem if args.serve == "tandem" else _serve_bare)(args.port)
        return

    spec = importlib.util.spec_from_file_location("serving_bench", HERE / "serving.py")
    assert spec is not None and spec.loader is not None
    sb = importlib.util.module_from_spec(spec)
    sys.modules["serving_bench"] = sb
    spec.loader.exec_module(sb)
    from rich.table import Table

    settings = argparse.Namespace(max_batch=8, max_delay_ms=2.0, ort_threads=1, swap_versions=1, workers=1)
    bundle_dir = sb.find_bundle(None)
    bundle = sb.Bundle.load(bundle_dir)
    images = sb.load_images(bundle, 64)
    home = sb.TandemHome(bundle_dir, settings)
    outputs = {o.name: list(o.shape[1:]) for o in bundle.manifest.outputs}
    binary = sb.make_targets(images, bundle.manifest.name, home.key)["tandem_binary"]
    variants = [v for v in args.variants.split(",") if v]
    servers: dict[str, tuple[Any, Path]] = {}
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        for variant in variants:
            port = sb.free_port()
            reqs = binary.write(port)  # the requests name the port (Host): one file a server
            reqs = reqs.rename(reqs.with_name(f"standin_{variant}.pkl"))
            env = {**home.env, "STANDIN_OUTPUTS": json.dumps(outputs),
                   "TANDEM_ACCESS_LOG": "0" if variant == "tandem_no_access_log" else "1"}
            serve = "bare" if variant == "bare" else "tandem"
            srv = sb.start(f"standin_{variant}", [sys.executable, __file__, "--serve", serve, "--port", str(port)],
                           env, port, sb.ROOT)
            servers[variant] = (srv, reqs)
            srv.wait_ready("/v2/health/ready" if serve == "tandem" else "/", 120)
        # Round by round, every server once a round: a busy minute of the machine falls on all of them.
        for i in range(args.repeats):
            for variant in variants:
                srv, reqs = servers[variant]
                sb.console.print(f"round {i + 1} of {args.repeats}: {variant} …")
                runs[variant].append(_run(sb, srv, reqs, args))
    finally:
        for srv, _ in servers.values():
            srv.stop()
    rows: dict[str, dict] = {}
    for variant, done in runs.items():
        cpu = [r["server_cpu_ms_per_req"] for r in done]
        median = sorted(done, key=lambda r: r["server_cpu_ms_per_req"])[len(done) // 2]
        rows[variant] = {**median, "server_cpu_ms_per_req_runs": cpu, "spread_ms": round(max(cpu) - min(cpu), 4)}

    table = Table(title=f"server CPU a request, stand-in model, OIP binary, c{args.concurrency}")
    for col in ("server", "requests/s", "CPU ms / request (median)", "runs", "errors"):
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, f"{r['rps']:.0f}", f"{r['server_cpu_ms_per_req']:.3f}",
                      ", ".join(f"{c:.3f}" for c in r["server_cpu_ms_per_req_runs"]), str(r["errors"]))
    sb.console.print(table)
    doc = {"concurrency": args.concurrency, "duration_s": args.duration, "repeats": args.repeats,
           "method": ("every model call answers zeros at once (a stand-in in the server process), so the server's CPU "
                      "is the stack's: utime + stime of its threads (/proc) over the measured phase / answered "
                      "requests, loadgen.py, OIP binary; bare: asyncio + httptools answering a canned reply"), "date": time.strftime("%Y-%m-%d"),
           "servers": rows}
    out = Path(args.out)
    atomic.write_text(out, json.dumps(doc, indent=2) + "\n")
    sb.console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
