"""``ModelUpdater``: keep one model on a device current, verified and encrypted at rest.

    updater = ModelUpdater("https://models.example.com", DEVICE_KEY, "celebmatch",
                           trusted_keys=[PublicKey.from_b64(SERVER_SIGNING_KEY)], app_version="2.4.0")
    model = updater.get_model("local_update_in_background")   # what is installed now; update quietly
    model.model.run(pixels)

The device registers once (``POST /v1/devices`` with DEVICE_KEY, the app's device API key) and
keeps the id and credential the server gives it (tandem.device.identity); every OTA call then sends
that credential, and the server judges the rollout on the id it assigned.

Each update: drop the current version if its stored files are damaged (so that it is fetched
again) → check (a signed payload, verified before it is read: tandem.device.payload) → plan,
fetch, verify, decrypt and install each file (tandem.device.install, atomically through
tandem.device.model_store). Any refusal raises a TandemError that says why, and leaves the running
model as it was. This module holds the app-facing side: download types, background updates,
loading into ONNX Runtime, listing, deleting, rollback and health reports.
"""

from __future__ import annotations

import logging
import os
import platform as platform_mod
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
import onnxruntime as ort

from tandem.bundle import Manifest
from tandem.bundle.runtime import OnnxModel
from tandem.device import payload as payload_mod
from tandem.device.conditions import DeviceState, DownloadConditions, always, unmet
from tandem.device.identity import Identity, Registration
from tandem.device.install import Installer, UpdateResult
from tandem.device.keystore import KeyStore
from tandem.device.model_store import ModelStore, Pointer
from tandem.device.ota_client import OtaClient, ProgressCallback
from tandem.device.payload import MANIFEST, Expected, Payload
from tandem.device.trust import TrustStore
from tandem.device.variants import DEFAULT_RUNTIME, DeviceModel, check_runtime, open_model
from tandem.device.vault import Vault, manifest_of
from tandem.errors import (
    BundleError,
    ChecksumError,
    ConditionsNotMet,
    ConfigError,
    DecryptionError,
    ModelError,
    NotFound,
    ServerUnreachable,
    StorageFull,
    is_storage_full,
)
from tandem.security.signing import PublicKey

log = logging.getLogger(__name__)

DownloadType = Literal["local", "latest", "local_update_in_background"]
# Where a ModelUpdater given no store_dir keeps its models and keys; an app passes its own data folder.
# Fixed, not TANDEM_HOME: the device path reads none of the server's settings.
DEFAULT_STORE = Path.home() / ".tandem" / "device"
Precision = Literal["fp32", "int8"]
VariantPrecision = Literal["fp32", "fp16", "int8"]  # a precision a check may prefer (docs/ota.md, "Variants")
ANY_TIME = DownloadConditions()
TIMEOUT = httpx.Timeout(10.0, read=60.0)  # connect/write/pool 10 s; a slow mobile link gets a minute per read


@dataclass
class LoadedModel:
    """An installed version, decrypted in memory and ready: ``model.run(pixels)`` (ONNX Runtime, or LiteRT
    for a LiteRT variant: ``variant`` says which)."""

    version: int
    manifest: Manifest
    model: DeviceModel
    files: dict[str, bytes] = field(default_factory=dict)  # the other files (e.g. gallery.npz), plaintext
    variant: str = "onnx-fp32"

    @property
    def session(self) -> ort.InferenceSession:
        if not isinstance(self.model, OnnxModel):
            raise ConfigError(f"v{self.version} runs the {self.variant} variant, which has no ONNX Runtime session; "
                              "call model.run(pixels)")
        return self.model.session


@dataclass(frozen=True)
class SignedAnswer:
    """The last signed check answer a device verified: when the server signed it, until when it held,
    what it said and why (docs/ota.md)."""

    issued_at: datetime
    expires_at: datetime
    action: str  # install | rollback | stay
    reason: str


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f} s ago"


@dataclass(frozen=True)
class InstalledVersion:
    version: int
    current: bool
    previous: bool
    sequence: int
    installed_at: str
    files: dict[str, int]  # name → plaintext size


def _default_os_version() -> str | None:
    # The server compares versions numerically ("6.8.0-45-generic" is not one): keep the numbers.
    m = re.match(r"\d+(\.\d+)*", platform_mod.release())
    return m.group(0) if m else None


def _default_ram_mb() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20))
    except (ValueError, OSError, AttributeError):
        return None


class ModelUpdater:
    def __init__(
        self,
        server_url: str,
        api_key: str,
        model: str,
        *,
        trusted_keys: Iterable[PublicKey],
        channel: str = "production",
        store_dir: Path | str | None = None,
        platform: str | None = None,
        os_version: str | None = None,
        app_version: str = "0",
        ram_mb: int | None = None,
        precision: VariantPrecision = "fp32",
        runtime: str = DEFAULT_RUNTIME,
        device_state: DeviceState = always,
        keep_keys: bool = True,
        timeout: float | httpx.Timeout = TIMEOUT,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
        threads: int | None = None,
    ) -> None:
        pinned = list(trusted_keys)
        if not pinned:
            raise ConfigError("ModelUpdater needs trusted_keys: the server's signing public keys "
                              "(`tandem keys signing list`), or every manifest is refused")
        self.store = ModelStore(Path(store_dir) if store_dir is not None else DEFAULT_STORE)
        # The pinned keys, plus the keys signed answers taught (a rotation), less those retired (tandem.device.trust).
        self.trust = TrustStore(self.store.root, api_key, pinned)
        self.store.model_dir(model)  # a bad model name fails here, not on the first update
        self.model = model
        self.channel = channel
        self.identity = Identity(self.store.root, server_url, api_key)
        self._registration: Registration | None = None
        self._registering = threading.Lock()
        self.platform = platform or platform_mod.system().lower()
        self.os_version = os_version or _default_os_version()
        self.app_version = app_version
        self.ram_mb = ram_mb if ram_mb is not None else _default_ram_mb()
        self.precision = precision
        self.runtime = check_runtime(runtime)
        self.device_state = device_state
        self.threads = threads
        self.keystore = KeyStore(self.store.root, api_key) if keep_keys else None
        self.client = OtaClient(server_url, api_key,
                                timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
                                transport, credential=lambda: self.registration().credential)
        self.vault = Vault(self.store, model, self.client, self.keystore, self._device)
        self.installer = Installer(self.store, self.vault, self.client, model, precision, device_state, retries)
        self._update_lock = threading.Lock()
        self._background: threading.Thread | None = None
        self.background_error: BaseException | None = None
        self.background_result: UpdateResult | None = None  # of the last background update that ended
        self.background_ended_at: float | None = None  # time.monotonic() when it ended
        self.load_failures = 0  # versions that failed to open since the last report()
        self.store.recover(model)

    # --- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        self.wait_background()
        self.client.close()

    def __enter__(self) -> ModelUpdater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def trusted(self) -> dict[str, PublicKey]:
        """The signing keys this device trusts now: pinned, learned through a rotation, less the retired."""
        return self.trust.current().keys

    # --- who this device is -------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        """The id the server assigned this device (registering first if it has none: needs the network)."""
        return self.registration().device_id

    def registration(self) -> Registration:
        """This device's registration with the server: the stored one, else a new one (POST /v1/devices)."""
        if self._registration is None:
            with self._registering, self.identity.locked():
                if self._registration is None:
                    self._registration = self.identity.load() or self._register()
        return self._registration

    def register(self, again: bool = False) -> str:
        """Register this device (once; ``again``: anew, e.g. after the server forgot it or revoked it — the
        fleet's operator sees the new id in `tandem devices list`). Returns the device id."""
        if not again:
            return self.device_id
        with self._registering, self.identity.locked():
            self._registration = self._register()
        return self._registration.device_id

    def _register(self) -> Registration:
        registration = self.client.register()
        self.identity.save(registration)
        log.info("registered as device %s with %s", registration.device_id, self.identity.server)
        return registration

    # --- what is installed ---------------------------------------------------------------------
    def installed_version(self) -> int | None:
        pointer = self.store.current(self.model)
        return pointer.version if pointer else None

    def pointer(self) -> Pointer | None:
        """The current version's pointer; a new one (``updated_at``) after every install, repair or rollback."""
        return self.store.current(self.model)

    def installed(self) -> list[InstalledVersion]:
        pointer = self.store.current(self.model)
        out = []
        for v in self.store.versions(self.model):
            rec = self.store.record(self.model, v)
            out.append(InstalledVersion(v, pointer is not None and pointer.version == v,
                                        pointer is not None and pointer.previous == v, rec.sequence,
                                        rec.installed_at, {n: f.size for n, f in rec.files.items()}))
        return out

    def delete(self, version: int | Literal["all"]) -> None:
        """Remove one installed version, or all. Deleting the current one falls back to the previous."""
        with self._update_lock:
            self.store.delete(self.model, None if version == "all" else int(version), self.keystore)
            self.vault.forget(None if version == "all" else int(version))

    def rollback(self) -> int:
        """Go back to the kept previous version, locally; returns it."""
        pointer = self.store.current(self.model)
        if pointer is None or pointer.previous is None:
            raise NotFound(f"no previous version of {self.model} is installed to roll back to")
        self.store.switch(self.model, pointer.previous)
        return pointer.previous

    # --- check and update ----------------------------------------------------------------------
    def _installed_for_runtime(self) -> int | None:
        """The installed version, as the check names it: None when it runs another runtime than this updater
        asks for (the app changed ``runtime``), so that the server offers this runtime's model afresh."""
        pointer = self.store.current(self.model)
        if pointer is None:
            return None
        try:
            runtime = self.store.record(self.model, pointer.version).runtime
        except (NotFound, ChecksumError):
            return pointer.version  # damaged: update() drops it before checking
        return pointer.version if runtime == self.runtime else None

    def check(self) -> Payload | None:
        """Ask the server what this device should run: a verified payload, or None if current (a signed
        "stay"; an unsigned 204 from a server of payload schema 1 is taken as "nothing new" too, but does
        not refresh :meth:`last_signed_answer`)."""
        installed = self._installed_for_runtime()
        answer = self.client.check({**self._device(), "model": self.model, "version": installed,
                                    "precision": self.precision, "schema": payload_mod.SCHEMA})
        if answer is None:
            log.info("the server answered the check of %s unsigned (204): no proof that nothing is new; last signed "
                     "answer: %s", self.model, _age(self.answer_age_s()))
            return None
        expected = Expected(self.model, self.channel, self.device_id, installed, self.store.last_sequence(self.model),
                            runtime=self.runtime)
        trust = self.trust.current()
        verified = payload_mod.read_answer(answer, trust.keys, expected, trust.retired)
        payload = verified.payload
        if verified.learned or verified.retired - trust.retired:
            self.trust.update(verified.learned, verified.retired, verified.signer)
        self.store.raise_sequence(self.model, payload.sequence)
        self.store.record_answer(self.model, {
            "issued_at": payload.issued_at.isoformat(), "expires_at": payload.expires_at.isoformat(),
            "action": payload.action, "reason": payload.reason, "version": payload.version,
            "sequence": payload.sequence, "variants": payload.variants})
        return None if payload.action == "stay" else payload

    def last_signed_answer(self) -> SignedAnswer | None:
        """The last check answer this device verified (any action, "stay" included), or None."""
        raw = self.store.last_answer(self.model)
        try:
            return SignedAnswer(datetime.fromisoformat(raw["issued_at"]), datetime.fromisoformat(raw["expires_at"]),
                                str(raw["action"]), str(raw["reason"])) if raw else None
        except (KeyError, TypeError, ValueError):
            return None

    def answer_age_s(self) -> float | None:
        """How stale this device's view of its server is: seconds since the server signed the last answer
        it verified (None: never). An attacker who blocks or fakes the server's answers cannot reset it;
        an app can warn, or stop trusting a model, when it grows past what it accepts."""
        last = self.last_signed_answer()
        return None if last is None else max(0.0, (datetime.now(UTC) - last.issued_at).total_seconds())

    def _drop_damaged(self) -> None:
        """Remove the current version if its stored files no longer match what was installed, so
        that this update installs the server's version again (it cannot be opened as it is: load()
        would fall back to the previous version, or fail)."""
        pointer = self.store.current(self.model)
        if pointer is None:
            return
        damaged = self.store.damaged(self.model, pointer.version)
        if not damaged:
            return
        log.warning("v%s of %s is damaged on this device (%s); removing it to download it again", pointer.version,
                    self.model, ", ".join(damaged))
        self.store.delete(self.model, pointer.version, self.keystore)
        self.vault.forget(pointer.version)

    def _device(self) -> dict[str, object]:
        """What the device says of itself: the check, the data-key and the report routes judge the rollout
        rules on the same fields. No device_id: the credential every call sends names the device."""
        return {"channel": self.channel, "platform": self.platform, "os_version": self.os_version,
                "app_version": self.app_version, "ram_mb": self.ram_mb, "runtime": self.runtime}

    def update(self, conditions: DownloadConditions = ANY_TIME,
               progress: ProgressCallback | None = None) -> UpdateResult:
        """Check, and install what the server offers if the conditions allow the download."""
        with self._update_lock:
            started = time.monotonic()
            self._drop_damaged()
            offered = self.check()
            if offered is None:
                return UpdateResult("current", self.installed_version())
            try:
                return self.installer.install(offered, conditions, progress, started)
            except OSError as e:
                if not is_storage_full(e):
                    raise
                raise StorageFull(f"this device is out of storage for v{offered.version} of {self.model} under "
                                  f"{self.store.root} ({e.strerror}); the installed version keeps running: free "
                                  "space and update again") from e

    # --- the download types --------------------------------------------------------------------
    def get_model(self, download_type: DownloadType = "local", conditions: DownloadConditions = ANY_TIME,
                  progress: ProgressCallback | None = None) -> LoadedModel:
        """``local``: the installed model; download only if there is none. ``latest``: check now and
        install anything newer first (offline: the installed model, if any).
        ``local_update_in_background``: the installed model now, while a thread checks and installs
        an update for the next call (with none installed, it downloads now, like ``latest``)."""
        if download_type not in ("local", "latest", "local_update_in_background"):
            raise ConfigError(f"download_type must be local, latest or local_update_in_background, not {download_type!r}")
        have = self.installed_version() is not None
        if download_type == "latest" or not have:
            try:
                result = self.update(conditions, progress)
                if result.status == "current" and not have:
                    raise NotFound(self._nothing_offered())
                if result.status == "deferred" and not have:
                    raise ConditionsNotMet(f"no version of {self.model} is installed, and the download needs "
                                           f"{', '.join(unmet(conditions, self.device_state()))}; try again later")
            except ServerUnreachable:
                if not have:
                    raise
                log.warning("update check for %s failed (offline?); using the installed version", self.model)
        elif download_type == "local_update_in_background":
            self.start_background_update(conditions, progress)
        return self.load()

    def _nothing_offered(self) -> str:
        last = self.store.last_answer(self.model) or {}
        if last.get("reason") == "no_variant":
            return (f"the server has no {self.runtime} model of {self.model} for this device on channel "
                    f"{self.channel!r}: the version it would get offers {', '.join(last.get('variants') or []) or 'none'}"
                    f"; ask for one of those (ModelUpdater(runtime=…)), or export and release a {self.runtime} variant")
        return (f"the server offers no version of {self.model} to this device on channel {self.channel!r} (no "
                "release, or the device is outside its rollout rules)")

    def start_background_update(self, conditions: DownloadConditions = ANY_TIME,
                                progress: ProgressCallback | None = None) -> threading.Thread:
        if self._background is not None and self._background.is_alive():
            return self._background
        self.background_ended_at = None

        def run() -> None:
            try:
                self.background_result = self.update(conditions, progress)
                self.background_error = None
            except BaseException as e:  # kept for the app to look at; the running model is untouched
                self.background_result = None
                self.background_error = e
                log.warning("background update of %s failed: %s", self.model, e)
            finally:
                self.background_ended_at = time.monotonic()

        self._background = threading.Thread(target=run, name=f"tandem-update-{self.model}", daemon=True)
        self._background.start()
        return self._background

    def background_running(self) -> bool:
        return self._background is not None and self._background.is_alive()

    def wait_background(self, timeout: float | None = None) -> bool:
        """Wait for a background update to end; False if it is still running after ``timeout``."""
        if self._background is None:
            return True
        self._background.join(timeout)
        return not self._background.is_alive()

    # --- loading -------------------------------------------------------------------------------
    def load(self) -> LoadedModel:
        """The current version, decrypted in memory into ONNX Runtime. If it cannot be opened (damaged
        storage), the kept previous version is opened instead and the failure counted for report()."""
        pointer = self.store.current(self.model)
        if pointer is None:
            raise NotFound(f"no version of {self.model} is installed in {self.store.root}; "
                           "call get_model('latest') or update() first")
        try:
            return self._load(pointer.version)
        except (ChecksumError, DecryptionError, ModelError, BundleError, NotFound, OSError) as e:
            self.load_failures += 1
            if pointer.previous is None:
                what = (f"v{pointer.version} of {self.model}, installed on this device, cannot be opened ({e}); the next "
                        "update() or get_model('latest') downloads it again")
                raise (ModelError(what) if isinstance(e, OSError) else type(e)(what)) from e
            log.warning("version %s of %s cannot be opened (%s); opening version %s", pointer.version, self.model,
                        e, pointer.previous)
            return self._load(pointer.previous)

    def _load(self, version: int) -> LoadedModel:
        rec = self.store.record(self.model, version)
        manifest = manifest_of(self.vault.open(rec, MANIFEST))
        files = {n: self.vault.open(rec, n) for n in rec.files if n not in (MANIFEST, rec.model_file)}
        # A version installed before variants was an ONNX model: its precision is the one models names it under.
        variant = rec.variant or "onnx-" + next((p for p, f in manifest.models.items() if f == rec.model_file), "fp32")
        model = open_model(manifest, variant, self.vault.open(rec, rec.model_file), self.threads)
        return LoadedModel(version, manifest, model, files, variant)

    # --- health --------------------------------------------------------------------------------
    def report(self, *, inferences: int = 0, inference_errors: int = 0, p50_ms: float | None = None,
               p99_ms: float | None = None, load_failures: int | None = None, version: int | None = None) -> None:
        """Tell the server how the installed version does since the last report (it halts a rollout on
        which too many devices fail). The server keeps each device's latest report per release, and
        counts one per device and model per TANDEM_OTA_REPORT_INTERVAL_S (more: RateLimited).
        ``load_failures`` defaults to the failures load() met since the last report."""
        v = version if version is not None else self.installed_version()
        if v is None:
            raise NotFound(f"no version of {self.model} is installed to report on")
        failures = self.load_failures if load_failures is None else load_failures
        # The device's fields as in a check: the server counts reports only from devices the release covers.
        body: dict[str, object] = {**self._device(), "model": self.model, "version": v, "load_failures": failures,
                                   "inference_errors": inference_errors, "inferences": inferences}
        if p50_ms is not None:
            body["p50_ms"] = p50_ms
        if p99_ms is not None:
            body["p99_ms"] = p99_ms
        self.client.report(body)
        if load_failures is None:
            self.load_failures = 0
