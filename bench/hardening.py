"""The reliability and security suite's measured figures (issue 8), as far as they are measured yet.

    make bench-hardening        (or: .venv/bin/python bench/hardening.py [--scale 6])

Runs the parser fuzzers of tests/fuzz (Hypothesis) with fresh random inputs and --scale times the
examples of the normal test suite: the OIP v2 splitter and tensors, TF-Serving bodies, gzip/deflate
bodies, photos, bundle manifests, `.tandem` archives and delta patches. Every input must end in a
clean result or one of Tandem's own errors; anything else (another exception, an input that runs
past tests/fuzz/tally.HANG_S) is a crash. Writes bench/results/hardening.json: parser_inputs and
parser_crashes, per target; the other figures of the issue (API fuzzing, fault injection, soak) are
null until their parts are written.
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
NOT_YET = "not measured yet"
UNMEASURED = ["fuzz_requests", "fuzz_5xx", "faults_injected", "data_lost", "soak_requests", "soak_errors",
              "rss_growth"]
console = Console(width=110)


def run_fuzzers(scale: float) -> tuple[dict[str, dict[str, int]], dict[str, int], float]:
    """(counts per target, pytest's test outcomes, seconds) of one run of tests/fuzz."""
    with tempfile.TemporaryDirectory() as tmp:
        tally, junit = Path(tmp) / "tally.json", Path(tmp) / "junit.xml"
        env = {**os.environ, "HYPOTHESIS_PROFILE": "long", "TANDEM_FUZZ_SCALE": str(scale),
               "TANDEM_FUZZ_TALLY": str(tally)}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/fuzz",
                               f"--junitxml={junit}"], cwd=REPO, env=env, capture_output=True, text=True)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=5.0, help="Examples per fuzzer, as a multiple of the test suite's.")
    args = ap.parse_args()
    console.print(f"fuzzing the parsers at {args.scale:g}× the test suite's examples …")
    targets, outcomes, seconds = run_fuzzers(args.scale)
    inputs = sum(t["inputs"] for t in targets.values())
    crashes = sum(t["crashes"] for t in targets.values())
    result = {
        "parser_inputs": inputs,
        "parser_crashes": crashes,
        **dict.fromkeys(UNMEASURED),
        "notes": {k: NOT_YET for k in UNMEASURED},
        "parser_targets": targets,
        "fuzz_tests": outcomes,
        "scale": args.scale,
        "seconds": round(seconds, 1),
        "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "hypothesis": hypothesis.__version__},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hardening.json").write_text(json.dumps(result, indent=2) + "\n")

    t = Table(title=f"parser fuzzing: {inputs:,} inputs in {seconds:.0f} s ({outcomes['tests']} tests, "
                    f"{outcomes['failures'] + outcomes['errors']} failed)")
    t.add_column("target")
    t.add_column("reads", style="dim")
    t.add_column("inputs", justify="right")
    t.add_column("crashes", justify="right")
    what = {"oip": "OIP v2 JSON header, binary splitter, tensors", "tfserving": "TF-Serving predict bodies",
            "content-encoding": "gzip/deflate request bodies", "image": "photos (JPEG, PNG, WebP, GIF, BMP)",
            "manifest": "bundle manifest.json and file names", "archive": ".tandem zip extraction",
            "delta": "TDP1 delta patches"}
    for name, c in sorted(targets.items()):
        t.add_row(name, what.get(name, ""), f"{c['inputs']:,}", str(c["crashes"]),
                  style="red" if c["crashes"] else None)
    t.add_row("all", "", f"{inputs:,}", str(crashes), style="bold")
    console.print(t)
    s = Table(title="issue 8 figures (bench/results/hardening.json)")
    s.add_column("figure")
    s.add_column("value", justify="right")
    for k in ["parser_inputs", "parser_crashes", *UNMEASURED]:
        s.add_row(k, f"{result[k]:,}" if result[k] is not None else f"[dim]null: {NOT_YET}[/]")
    console.print(s)
    if crashes or outcomes["failures"] or outcomes["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
