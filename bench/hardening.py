"""The reliability and security suite's measured figures (issue 8), as far as they are measured yet.

    make bench-hardening        (or: .venv/bin/python bench/hardening.py [--scale 5] [--api-scale 2]
                                      [--rounds 2] [--parts parsers,api,faults])

Three parts, each writing its figures into bench/results/hardening.json (a part not run keeps the
figures of the file's previous run, with their own scale and time):

- parsers: the parser fuzzers of tests/fuzz (Hypothesis) with fresh random inputs and --scale times
  the examples of the normal test suite: the OIP v2 splitter and tensors, TF-Serving bodies,
  gzip/deflate bodies, photos, bundle manifests, `.tandem` archives and delta patches. Every input
  must end in a clean result or one of Tandem's own errors; anything else (another exception, an
  input that runs past tests/fuzz/tally.HANG_S) is a crash. parser_inputs, parser_crashes.
- api: the whole HTTP API fuzzed with schemathesis against the OpenAPI document a real server
  serves (tests/fuzz/test_api_schema.py), every phase (examples, coverage, fuzzing, stateful) for
  each caller (no key, predict, device, admin), fresh inputs, --api-scale times the suite's
  examples per operation. fuzz_requests, fuzz_5xx; any failed check fails the part.
- faults: every fault-injection scenario of tests/faults, --rounds times (tests/faults/campaign.py):
  push and alias killed at each point, a disk that fills up under a push, the registry database cut
  under load (behind a relay) and a private PostgreSQL really stopped and started (pg_ctl stop -m fast
  and -m immediate; recovery_s: from the database being back to the first 200), the
  server killed mid-download, a device killed at each install step and at random
  instants, a device whose storage fills up. faults_injected, data_lost (runs after which anything
  was lost or broken).

The soak figures (soak_requests, soak_errors, rss_growth, soak_p99_drift, soak_minutes, soak_rps)
come from bench/soak.py (make bench-soak), which merges them into the same file; this script keeps
them as they are there (null until a soak has run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import hypothesis
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
FIGURES = ["parser_inputs", "parser_crashes", "fuzz_requests", "fuzz_5xx", "faults_injected", "data_lost"]
SOAK = ["soak_requests", "soak_errors", "rss_growth", "soak_p99_drift", "soak_minutes", "soak_rps"]
PARTS = ("parsers", "api", "faults")
API_TEST = "tests/fuzz/test_api_schema.py"
console = Console(width=110)


def run_pytest(targets: list[str], scale: float, extra: list[str] = ()) -> tuple[dict[str, dict[str, int]], dict[str, int], float]:
    """(counts per fuzz target, pytest's test outcomes, seconds) of one long-profile pytest run."""
    with tempfile.TemporaryDirectory() as tmp:
        tally, junit = Path(tmp) / "tally.json", Path(tmp) / "junit.xml"
        env = {**os.environ, "HYPOTHESIS_PROFILE": "long", "TANDEM_FUZZ_SCALE": str(scale),
               "TANDEM_FUZZ_TALLY": str(tally)}
        env.setdefault("TANDEM_DATA_HOME", str(REPO.parent / "shared" / "datasets"))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets, *extra,
                               f"--junitxml={junit}"], cwd=REPO, env=env, check=False, capture_output=True,
                               text=True)
        seconds = time.perf_counter() - t0
        if not tally.exists() or not junit.exists():
            console.print(proc.stdout[-4000:], proc.stderr[-4000:], markup=False)
            raise SystemExit(f"the fuzz run did not finish (pytest exit {proc.returncode})")
        if proc.returncode:
            console.print(proc.stdout[-6000:], markup=False)
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        assert suite is not None
        outcomes = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        return json.loads(tally.read_text()), outcomes, seconds


def parsers(scale: float) -> dict:
    targets, outcomes, seconds = run_pytest(["tests/fuzz"], scale, ["--ignore", API_TEST])
    return {"parser_inputs": sum(t["inputs"] for t in targets.values()),
            "parser_crashes": sum(t["crashes"] for t in targets.values()),
            "parser_targets": targets, "fuzz_tests": outcomes, "scale": scale, "seconds": round(seconds, 1)}


def api(scale: float) -> dict:
    targets, outcomes, seconds = run_pytest([API_TEST], scale)
    return {"fuzz_requests": sum(t["inputs"] for t in targets.values()),
            "fuzz_5xx": sum(t["crashes"] for t in targets.values()),
            "api_callers": {k.removeprefix("api:"): v for k, v in targets.items()},
            "api_tests": outcomes, "api_scale": scale, "api_seconds": round(seconds, 1)}


def faults(rounds: int, random_kills: int) -> dict:
    """The fault-injection scenarios (tests/faults/campaign.py), run from the repository as a program, as the
    fuzzers run under pytest: bench/ imports nothing from tests/."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "faults.json"
        proc = subprocess.run([sys.executable, "-m", "tests.faults.campaign", "--rounds", str(rounds),
                               "--random-kills", str(random_kills), "--seed", str(int(time.time())),
                               "--out", str(counts)], cwd=REPO, check=False)
        if proc.returncode or not counts.exists():
            raise SystemExit(f"the fault campaign did not finish (exit {proc.returncode})")
        scenarios = json.loads(counts.read_text())
    return {"faults_injected": sum(s["runs"] for s in scenarios.values()),
            "data_lost": sum(s["lost"] for s in scenarios.values()),
            "fault_scenarios": {name: {"runs": s["runs"], "lost": s["lost"], "seconds": round(s["seconds"], 1),
                                       **({"skipped": s["skipped"]} if s["skipped"] else {}),
                                       **({"recovery_s": s["recovery_s"]} if s["recovery_s"] else {}),
                                       **({"problems": s["problems"]} if s["problems"] else {})}
                                for name, s in scenarios.items()},
            "fault_rounds": rounds, "fault_seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=5.0, help="Parser examples, as a multiple of the test suite's.")
    ap.add_argument("--api-scale", type=float, default=2.0, help="API examples per operation, ditto.")
    ap.add_argument("--rounds", type=int, default=2, help="Runs of each fault scenario.")
    ap.add_argument("--random-kills", type=int, default=6, help="Device processes killed at random instants.")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"Which parts to run, of {', '.join(PARTS)}.")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")

    path = RESULTS / "hardening.json"
    result: dict = json.loads(path.read_text()) if path.exists() else {}
    result.pop("notes", None)
    if "parsers" in parts:
        console.print(f"fuzzing the parsers at {args.scale:g}× the test suite's examples …")
        result.update(parsers(args.scale))
    if "api" in parts:
        console.print(f"fuzzing the HTTP API (schemathesis) at {args.api_scale:g}× the test suite's examples …")
        result.update(api(args.api_scale))
    if "faults" in parts:
        console.print(f"injecting faults, {args.rounds} rounds …")
        result.update(faults(args.rounds, args.random_kills))
    for k in SOAK:  # bench/soak.py's figures, left as that run wrote them
        result.setdefault(k, None)
    result["machine"] = {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                         "python": platform.python_version(), "hypothesis": hypothesis.__version__}
    ordered = {k: result.get(k) for k in [*FIGURES, *SOAK]} | result
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(ordered, indent=2) + "\n")
    report(ordered)
    failed = [t for t in ("fuzz_tests", "api_tests") if (o := ordered.get(t)) and (o["failures"] or o["errors"])]
    if ordered.get("parser_crashes") or ordered.get("fuzz_5xx") or ordered.get("data_lost") or failed:
        raise SystemExit(1)


def report(result: dict) -> None:
    if "parser_targets" in result:
        t = Table(title=f"parser fuzzing: {result['parser_inputs']:,} inputs in {result['seconds']:.0f} s")
        for col, kw in (("target", {}), ("inputs", {"justify": "right"}), ("crashes", {"justify": "right"})):
            t.add_column(col, **kw)
        for name, c in sorted(result["parser_targets"].items()):
            t.add_row(name, f"{c['inputs']:,}", str(c["crashes"]), style="red" if c["crashes"] else None)
        console.print(t)
    if "api_callers" in result:
        t = Table(title=f"API fuzzing (schemathesis): {result['fuzz_requests']:,} requests in "
                        f"{result['api_seconds']:.0f} s")
        for col, kw in (("caller", {}), ("requests", {"justify": "right"}), ("5xx", {"justify": "right"})):
            t.add_column(col, **kw)
        for name, c in result["api_callers"].items():
            t.add_row(name, f"{c['inputs']:,}", str(c["crashes"]), style="red" if c["crashes"] else None)
        console.print(t)
    if "fault_scenarios" in result:
        t = Table(title=f"fault injection: {result['faults_injected']} faults in {result['fault_seconds']:.0f} s")
        for col, kw in (("scenario", {}), ("runs", {"justify": "right"}), ("lost", {"justify": "right"})):
            t.add_column(col, **kw)
        for name, s in result["fault_scenarios"].items():
            t.add_row(name + (f" [dim](skipped: {s['skipped']})[/]" if s.get("skipped") else ""), str(s["runs"]),
                      str(s["lost"]), style="red" if s["lost"] else None)
        console.print(t)
    s = Table(title="issue 8 figures (bench/results/hardening.json)")
    s.add_column("figure")
    s.add_column("value", justify="right")
    for k in [*FIGURES, *SOAK]:
        missing = "[dim]null: run bench/soak.py[/]" if k in SOAK else "[dim]null: not measured yet[/]"
        s.add_row(k, f"{result[k]:,}" if result.get(k) is not None else missing)
    console.print(s)


if __name__ == "__main__":
    main()
