"""Every fault-injection scenario, each run several times, counted: bench/hardening.py runs this
(``python -m tests.faults.campaign --help``, from the repository's root).

A run injects one fault; it "lost data" when its checks found anything lost or broken afterwards
(a partial version or object visible, an alias pointing nowhere, a device that cannot open its
model, a recovery that failed, an answer other than 200 or 503 while the database was away, cut
behind a relay or a private PostgreSQL really stopped).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tandem.testing.bundles import make_bundle
from tests.faults import database_faults, ota_faults, registry_faults
from tests.faults.harness import with_padding


@dataclass
class Scenario:
    runs: int = 0
    lost: int = 0
    skipped: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # the first few, to read
    recovery_s: list[float] = field(default_factory=list)  # database outages: back to 200s after it returned

    def record(self, problems: list[str] | None, skip: str = "") -> None:
        if problems is None:
            self.skipped = skip
            return
        self.runs += 1
        if problems:
            self.lost += 1
            self.problems += problems[: max(0, 5 - len(self.problems))]


def run(rounds: int, random_kills: int, seed: int, log: Callable[[str], None] = print) -> dict[str, Scenario]:
    out: dict[str, Scenario] = {}

    def scenario(name: str, fn: Callable[[Path], list[str] | None], skip: str = "") -> None:
        s = out.setdefault(name, Scenario())
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="tandem-fault-") as tmp:
            try:
                s.record(fn(Path(tmp)), skip)
            except Exception as e:  # the scenario itself broke: count it, with why
                s.record([f"{type(e).__name__}: {e}"])
            except BaseException as e:  # pytest.skip (PostgreSQL not reachable)
                if type(e).__name__ != "Skipped":
                    raise
                s.record(None, str(e))
        s.seconds += time.perf_counter() - t0
        log(f"  {name}: {s.skipped or ('LOST DATA' if s.lost else 'ok')} ({s.runs} runs)")

    def outage(name: str, fn: Callable[[Path], database_faults.Outage]) -> None:
        def problems(w: Path) -> list[str]:
            o = fn(w)
            if o.recovered_s is not None:
                out[name].recovery_s.append(round(o.recovered_s, 2))
            return o.problems
        scenario(name, problems)

    with tempfile.TemporaryDirectory(prefix="tandem-fault-bundles-") as tmp:
        root = Path(tmp)
        v1 = make_bundle(root / "v1", None, seed=1)
        v2 = make_bundle(root / "v2", None, seed=2)
        big = with_padding(v1, root / "big", 48, seed=3)
        for _ in range(rounds):
            for at in registry_faults.PUSH_POINTS:
                scenario(f"push killed: {at}", lambda w, at=at: registry_faults.push_killed(w, big, "faces", at))
            for at in registry_faults.ALIAS_POINTS:
                def alias(w: Path, at: str = at) -> list[str]:
                    with registry_faults.serving_two_versions(w, [v1, v2]) as (url, key):
                        return registry_faults.alias_killed(w, [v1, v2], "faces", at, url, key)
                scenario(f"alias killed: {at}", alias)
            scenario("push onto a full disk", lambda w: registry_faults.push_disk_full(w, big, v1, "faces"),
                     "no tmpfs can be mounted here")
            outage("database cut under load", lambda w: database_faults.outage_under_load(w, [v1]))
            for mode in database_faults.STOP_MODES:
                outage(f"PostgreSQL stopped ({mode}) under load",
                       lambda w, mode=mode: database_faults.stopped_under_load(w, [v1], (mode,))[0])

        with tempfile.TemporaryDirectory(prefix="tandem-fault-ota-") as ota_tmp, \
                ota_faults.ota_rig(Path(ota_tmp)) as rig:
            for _ in range(rounds):
                scenario("server killed mid-download", lambda w: ota_faults.server_killed_during_download(rig, w))
                scenario("device storage full", lambda w: ota_faults.device_storage_full(rig, w),
                         "no tmpfs can be mounted here")
            for step in ota_faults.DEVICE_STEPS:
                scenario(f"device killed at {step}", lambda w, step=step: ota_faults.device_killed(rig, w, step))
            with tempfile.TemporaryDirectory() as measure:
                delays = ota_faults.random_kill_delays(rig, Path(measure), random_kills, seed)
            for delay in delays:
                scenario("device killed at a random instant",
                         lambda w, d=delay: ota_faults.device_killed(rig, w, None, after_s=d))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Every fault-injection scenario, counted into a JSON file.")
    ap.add_argument("--rounds", type=int, default=2, help="Runs of each fault scenario.")
    ap.add_argument("--random-kills", type=int, default=6, help="Device processes killed at random instants.")
    ap.add_argument("--seed", type=int, default=0, help="Seeds the random instants.")
    ap.add_argument("--out", type=Path, required=True, help="Where the counts go: {scenario: Scenario's fields}.")
    args = ap.parse_args()
    # The scenarios' in-process servers log every load and every failed database poll: keep the
    # progress lines readable (create_app adds no handler where one exists).
    quiet = logging.getLogger("tandem")
    quiet.addHandler(logging.NullHandler())
    quiet.setLevel(logging.ERROR)
    scenarios = run(args.rounds, args.random_kills, args.seed, log=lambda line: print(line, flush=True))
    args.out.write_text(json.dumps({name: asdict(s) for name, s in scenarios.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
