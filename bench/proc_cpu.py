"""Where a machine's CPU went during a load, by kind of process: the server (plain `tandem serve` or a Ray
Serve replica), HAProxy, Ray's own processes, the load generator, the rest.

Reads utime + stime of every process in /proc before and after (a process that started or ended in between
counts only from or until when it was seen): exact to the clock tick, nothing attached to any process. Used by
bench/scale.py's serve cells to show where Ray Serve's own overhead sits (issue 21, item 4).
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

# (group, substrings of the process's name or command line); the first that matches decides.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("replica", ("ServeReplica",)),
    ("haproxy", ("haproxy",)),
    ("ray serve controller and proxy", ("ServeController", "ProxyActor")),
    ("ray node (raylet, GCS, dashboard, agents)", ("raylet", "gcs_server", "dashboard", "agent", "log_monitor",
                                                   "monitor.py", "ray::", "default_worker", "ray/_private")),
    ("load generator", ("loadgen",)),
    ("tandem serve", ("tandem serve", "tandem.__main__ serve")),
]


def _describe(pid: str) -> tuple[str, float] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()
    return f"{name} {cmd}", (int(fields[11]) + int(fields[12])) / TICK


def snapshot() -> dict[int, tuple[str, float]]:
    """{pid: (name and command line, CPU seconds so far)} of every process now."""
    out: dict[int, tuple[str, float]] = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (d := _describe(pid)) is not None:
            out[int(pid)] = d
    return out


def group_of(described: str) -> str:
    for group, needles in GROUPS:
        if any(n in described for n in needles):
            return group
    return "other"


def _used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> list[tuple[float, int, str]]:
    """(CPU seconds between the snapshots, pid, described) of every process alive at ``after``; a pid that now
    describes another process (reused) counts from zero."""
    return [(max(0.0, t1 - (before[pid][1] if pid in before and before[pid][0] == described else 0.0)), pid, described)
            for pid, (described, t1) in after.items()]


def by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall_s: float,
             requests: int) -> dict[str, dict[str, float]]:
    """CPU per group between two snapshots: cores busy on average (``cores``) and milliseconds per request."""
    cpu: dict[str, float] = {}
    for seconds, _, described in _used(before, after):
        group = group_of(described)
        cpu[group] = cpu.get(group, 0.0) + seconds
    return {g: {"cores": round(s / wall_s, 3), "ms_per_request": round(1e3 * s / max(1, requests), 3)}
            for g, s in sorted(cpu.items(), key=lambda kv: -kv[1])}


def top(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall_s: float,
        n: int = 8) -> list[dict[str, object]]:
    """The ``n`` busiest processes between two snapshots: group, command (shortened) and cores busy."""
    rows = sorted(_used(before, after), reverse=True)
    return [{"pid": pid, "group": group_of(d), "command": d[:120], "cores": round(s / wall_s, 3)}
            for s, pid, d in rows[:n] if s > 0]
