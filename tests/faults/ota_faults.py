"""Faults on the over-the-air path: `tandem serve` killed (SIGKILL) while a device downloads an
update, the device's own process killed at every step of an install (the delta rebuild included)
and at random instants, and a device whose storage fills up. A device must always open the model
it ran before or the new one, exactly (its outputs are compared with ONNX Runtime on the bundle),
and the next update must complete.

``OtaRig``: a registry with faces v1 (tiny) and v2 (v1 plus 16 MiB of unused weights, so that its
download and delta rebuild take a while and outlast the socket buffers), v1 released, a real
`tandem serve` subprocess on a fixed port (restartable), and a device store holding v1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tandem.device import ModelUpdater, Progress
from tandem.device.faults import ENV as FAULT_AT
from tandem.errors import StorageFull, TandemError
from tandem.registry.ota import Ota
from tandem.registry.registry import Registry
from tandem.security.signing import PublicKey
from tandem.testing.bundles import make_bundle
from tandem.testing.processes import free_port, stop, until
from tandem.testing.served import serve
from tests.faults.harness import PIXELS, REPO, cli_env, reference, settings_of, tmpfs, with_padding

# The steps of tandem.device.faults an update from v1 to v2 passes ("cleanup" needs a third version).
DEVICE_STEPS = ("download", "delta", "staging", "staged", "renamed", "keyed", "pointed")
_UPDATE = (
    "import sys\n"
    "from tandem.device import ModelUpdater\n"
    "from tandem.security.signing import PublicKey\n"
    "url, key, store, *trusted = sys.argv[1:]\n"
    "u = ModelUpdater(url, key, 'faces', store_dir=store, trusted_keys=[PublicKey.from_b64(t) for t in trusted],\n"
    "                 app_version='2.4.0', platform='android', os_version='14', ram_mb=4096, timeout=30)\n"
    "print(u.update())\n"
)


@dataclass
class OtaRig:
    root: Path
    env: dict[str, str]
    port: int
    device_key: str
    trusted: list[PublicKey]
    expected: dict[int, np.ndarray]
    on_v1: Path  # a device store holding v1; scenarios work on copies
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = serve(env=self.env, port=self.port, cwd=REPO, log=self.root / "serve.log").proc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def updater(self, store: Path, url: str | None = None, **kw) -> ModelUpdater:  # type: ignore[no-untyped-def]
        kw.setdefault("timeout", 30)
        return ModelUpdater(url or self.url, self.device_key, "faces", store_dir=store, trusted_keys=self.trusted,
                            app_version="2.4.0", platform="android", os_version="14", ram_mb=4096, **kw)

    def device_copy(self, dst: Path) -> Path:
        shutil.copytree(self.on_v1, dst)
        return dst

    def runs(self, store: Path, allowed: tuple[int, ...]) -> list[str]:
        """The store opens, offline, into one of ``allowed`` versions, answering exactly as that bundle does."""
        try:
            with self.updater(store, url="http://127.0.0.1:9", retries=0, timeout=2) as u:
                loaded = u.load()
                got = loaded.model.run(PIXELS)["probabilities"]
        except (TandemError, OSError) as e:
            return [f"the device store does not open: {e}"]
        if loaded.version not in allowed:
            return [f"the device runs v{loaded.version}, not one of {allowed}"]
        if not np.array_equal(got, self.expected[loaded.version]):
            return [f"the device's v{loaded.version} answers differently from the bundle"]
        leftovers = [p.name for p in (store / "faces" / "versions").iterdir() if p.name.startswith(".")]
        return [f"leftovers in the device store: {leftovers}"] if leftovers else []

    def completes(self, store: Path) -> list[str]:
        """The next update installs v2 and the device runs it."""
        try:
            with self.updater(store) as u:
                result = u.update()
        except TandemError as e:
            return [f"the update after the fault failed: {e}"]
        if result.version != 2:
            return [f"the update after the fault ended at {result}"]
        return self.runs(store, (2,))


@contextlib.contextmanager
def ota_rig(root: Path) -> Iterator[OtaRig]:
    v1 = make_bundle(root / "v1", None, seed=1)
    v2 = with_padding(v1, root / "v2", 16, seed=2)
    home = root / "home"
    settings = settings_of(home)
    with Registry.open(settings) as reg:
        reg.push(v1)
        reg.push(v2)
        device_key = reg.create_key("device", "fault tests")[0]
        ota = Ota(reg, settings)
        ota.releases.release("faces", 1, "production")
        trusted = [PublicKey.from_b64(k.public_key) for k in ota.keys.signing_keys()]
    # Every scenario works on a copy of one device store: one registered device, many updates.
    env = cli_env(home, TANDEM_OTA_REPORT_FLUSH_S="0.2", TANDEM_DEVICE_RATE_LIMIT_BURST="100000",
                  TANDEM_PER_DEVICE_RATE_LIMIT_BURST="100000")
    rig = OtaRig(root, env, free_port(), device_key, trusted, {1: reference(v1), 2: reference(v2)}, root / "on-v1")
    rig.start()
    try:
        with rig.updater(rig.on_v1) as u:
            assert u.update().version == 1
        with Registry.open(settings) as reg:
            Ota(reg, settings).releases.release("faces", 2, "production")
        with rig.updater(rig.device_copy(root / "probe")) as u:
            until(lambda: (p := u.check()) is not None and p.version == 2, "the server to offer v2")
        yield rig
    finally:
        rig.stop()


def server_killed_during_download(rig: OtaRig, work: Path) -> list[str]:
    """SIGKILL the server part-way through the device's download of v2: the device keeps running v1;
    with the server back (same registry, restarted), the update resumes and lands."""
    store = rig.device_copy(work / "store")
    cut: list[Progress] = []

    def progress(p: Progress) -> None:
        if not cut and p.file.startswith("model.onnx") and 0 < p.done < p.total:
            cut.append(p)
            rig.kill()

    problems = []
    try:
        with rig.updater(store, retries=1) as u:
            result = u.update(progress=progress)
        problems.append(f"the update went through although the server was killed mid-download: {result}")
    except TandemError:
        pass  # refused or cut: what a device sees when its server dies
    finally:
        if rig.proc is None or rig.proc.poll() is not None:
            rig.start()
    if not cut:
        problems.append("the download never started, so the server was not killed during it")
    problems += rig.runs(store, (1,))
    parts = list((store / "faces" / "downloads").glob("*.part"))
    problems += rig.completes(store)
    if not parts:
        problems.append("the cut download kept no part to resume from")
    return problems


def device_killed(rig: OtaRig, work: Path, step: str | None, after_s: float | None = None) -> list[str] | None:
    """Update v1 → v2 in a device process that is killed at ``step`` (tandem.device.faults), or
    ``after_s`` seconds after it started: the store opens into v1 or v2, and the next update lands.
    None: the process finished before ``after_s`` (nothing was injected)."""
    store = rig.device_copy(work / "store")
    env = {k: v for k, v in os.environ.items() if k != FAULT_AT}
    if step is not None:
        env[FAULT_AT] = step
    args = [rig.url, rig.device_key, str(store), *(k.to_b64() for k in rig.trusted)]
    proc = subprocess.Popen([sys.executable, "-c", _UPDATE, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if after_s is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(after_s)
        if proc.poll() is not None:
            proc.communicate()
            return None  # it finished before the instant: no fault was injected
        proc.kill()
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    problems = []
    if step is not None and proc.returncode != -signal.SIGKILL:
        problems.append(f"the device process was to die at {step!r} but ended with {proc.returncode}: {err[-500:]}")
    problems += rig.runs(store, (1, 2))
    return problems + rig.completes(store)


def device_storage_full(rig: OtaRig, work: Path) -> list[str] | None:
    """The device's storage fills up during the update to v2 (16 MiB on a 6 MiB disk): a clear error,
    v1 still runs; with space freed, the update lands. None where no small disk can be mounted here."""
    with tmpfs(work / "disk", "6m") as disk:
        if disk is None:
            return None
        store = rig.device_copy(disk / "store")
        problems = []
        try:
            with rig.updater(store) as u:
                result = u.update()
            problems.append(f"an update of 16 MiB onto 6 MiB went through: {result}")
        except StorageFull as e:
            if "out of storage" not in str(e):
                problems.append(f"unclear error for a full device: {e}")
        except Exception as e:  # the finding: anything but StorageFull
            problems.append(f"a full device gave {type(e).__name__}: {e}")
        problems += rig.runs(store, (1,))
        subprocess.run(["mount", "-o", "remount,size=96m", str(disk)], check=True, capture_output=True)
        return problems + rig.completes(store)


def random_kill_delays(rig: OtaRig, work: Path, count: int, seed: int) -> list[float]:
    """``count`` instants, spread over one whole update by a device process (measured here)."""
    t0 = time.monotonic()
    device_killed(rig, work / "measure", None)  # the whole update, and the check that it lands
    whole = time.monotonic() - t0
    rng = np.random.default_rng(seed)
    return sorted(float(x) for x in rng.uniform(0.2 * whole, whole, count))
