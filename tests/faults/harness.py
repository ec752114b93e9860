"""What the fault-injection scenarios share: real `tandem` processes to kill, and the checks that
say whether a fault lost or broke anything.

A scenario returns the problems it found (an empty list: the registry, the store and the device
came through whole). The tests assert there are none; bench/hardening.py counts them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from sqlalchemy import text

from tandem.bundle import Bundle, write_manifest
from tandem.errors import NotFound
from tandem.registry.registry import Registry
from tandem.settings import Settings

REPO = Path(__file__).resolve().parents[2]
KILL_AFTER_SQL = "TANDEM_TEST_KILL_AFTER_SQL"
PIXELS = np.random.default_rng(0).integers(0, 256, (2, 100, 75, 3), dtype=np.uint8)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """A `tandem` subprocess's environment: this registry (SQLite under ``home``), nothing of the machine's."""
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_DATABASE_URL": "", "TANDEM_REDIS_URL": "",
           "TANDEM_ACCESS_LOG": "0", "TANDEM_ALIAS_POLL_S": "0.1", "COLUMNS": "200", **extra}
    for name in ("TANDEM_OTA_MASTER_KEY", KILL_AFTER_SQL, "TANDEM_FAULT_AT"):
        if name not in extra:
            env.pop(name, None)
    return env


def settings_of(home: Path) -> Settings:
    return Settings(home=home, database_url=None, redis_url=None)


def spawn(args: list[str], env: dict[str, str], kill_after_sql: str | None = None) -> subprocess.Popen:
    """`tandem ARGS` in a new process; with ``kill_after_sql``, it SIGKILLs itself right after the
    database runs the first statement that starts with it (inside the transaction, before COMMIT)."""
    if kill_after_sql is None:
        cmd = [sys.executable, "-m", "tandem", *args]
    else:
        cmd = [sys.executable, "-m", "tests.faults.kill_after_sql", *args]
        env = {**env, KILL_AFTER_SQL: kill_after_sql}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it ended (or the time ran out) first."""
    deadline = time.monotonic() + timeout
    fired = False
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.kill()
            fired = True
            break
        time.sleep(0.002)
    if proc.poll() is None:
        proc.kill()
    proc.communicate()  # reaps it and closes its pipes
    return fired


def finished(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, (out or "") + (err or "")


def killed(proc: subprocess.Popen, what: str) -> list[str]:
    """No problem if ``proc`` died of SIGKILL; else what it did instead (the fault was not injected)."""
    code, output = finished(proc)
    return [] if code == -signal.SIGKILL else [f"{what}: expected SIGKILL, the process ended with {code}: {output[-500:]}"]


# --- what must hold after a fault -----------------------------------------------------------------

def store_problems(objects: Path) -> list[str]:
    """Objects whose bytes are not what their name (their sha256) says: a partial object made visible."""
    problems = []
    if not objects.is_dir():
        return problems
    for shard in objects.iterdir():
        if shard.name.startswith(".") or not shard.is_dir():
            continue
        for obj in shard.iterdir():
            digest = hashlib.sha256(obj.read_bytes()).hexdigest()
            if digest != shard.name + obj.name:
                problems.append(f"store object {shard.name}{obj.name} holds bytes with sha256 {digest}")
    return problems


def database_problems(settings: Settings) -> list[str]:
    with Registry.open(settings) as reg, reg.db.engine.connect() as c:
        result = c.execute(text("PRAGMA integrity_check")).scalar()
    return [] if result == "ok" else [f"SQLite integrity_check: {result}"]


def versions_of(settings: Settings, name: str) -> list[int]:
    with Registry.open(settings) as reg:
        try:
            return [v.version for v in reg.versions(name)]
        except NotFound:
            return []


def verified_versions(settings: Settings, name: str) -> list[str]:
    """Every recorded version builds from the store into a bundle whose hashes verify."""
    problems = []
    with Registry.open(settings) as reg:
        for v in versions_of(settings, name):
            try:
                Bundle.load(reg.bundle_dir(name, v))
            except Exception as e:  # any failure here is the finding
                problems.append(f"{name} v{v} does not build into a verified bundle: {e}")
    return problems


# --- bundles ---------------------------------------------------------------------------------------

def with_padding(src: Path, dst: Path, megabytes: int, seed: int) -> Path:
    """A copy of bundle ``src`` whose ONNX model also holds ``megabytes`` of random weights nothing uses:
    the same answers, a file large enough that writing or sending it takes a while."""
    import shutil

    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    noise = np.random.default_rng(seed).standard_normal(megabytes * (1 << 18)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(noise, "padding"))
    (dst / "model.onnx").unlink()  # copytree may have hard-linked nothing, but never write through a link
    onnx.save(model, str(dst / "model.onnx"))
    write_manifest(dst, Bundle.load(dst, verify=False).manifest)
    return dst


def reference(bundle: Path) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"pixels": PIXELS})[0]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path | None]:
    """A RAM filesystem of ``size`` at ``path`` (a disk that fills up); None where mounting is not
    permitted (not root, or a container without CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             check=False, capture_output=True, text=True).returncode == 0
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
