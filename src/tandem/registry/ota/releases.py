"""OTA releases in the registry: which version each channel offers to which devices, pins, and the
device health reports that can halt and roll back a release (docs/ota.md).

Every change here moves the registry's generation in the same transaction, so servers reload their
rules on their next poll, and devices see it as a higher payload ``sequence``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tandem.errors import Conflict, InvalidRequest, NotFound, RegistryError, quoted
from tandem.registry import tx
from tandem.registry.ota.keys import OtaKeys
from tandem.registry.ota.objects import OtaObjects
from tandem.registry.ota.records import HealthInfo, PinInfo, ReleaseInfo
from tandem.registry.ota.rollout import STATES, Health, ReleaseState, gate_trips, parse_version
from tandem.registry.ota.variants import check_offers, check_restriction
from tandem.registry.records import ALIAS_RE
from tandem.registry.schema import DeviceHealth, Model, Release, ReleaseHealth, ReleasePin, utcnow

if TYPE_CHECKING:
    from tandem.registry.registry import Registry

DEFAULT_CHANNEL = "production"
DEFAULT_MIN_DEVICES = 20
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PLATFORM_RE = re.compile(r"^[a-z0-9._-]{1,32}$")
MAX_RAM_MB = 10_000_000
WRITE_ATTEMPTS = 5
IN_CHUNK = 500  # device ids per IN (...) lookup: well under every database's parameter limit


def check_channel(channel: object) -> str:
    if not isinstance(channel, str) or not ALIAS_RE.fullmatch(channel):
        raise InvalidRequest(f"channel {quoted(channel)} is not a valid channel name: use 1-64 lowercase letters, "
                             "digits, '-' or '_', e.g. production or beta")
    return channel


def check_device_id(device_id: object) -> str:
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise InvalidRequest(f"device_id {quoted(device_id)} is not a valid device id: use 1-128 letters, digits, "
                             "'.', '_', ':' or '-' (a UUID works)")
    return device_id


def check_platform(platform: object) -> str:
    text = platform.strip().lower() if isinstance(platform, str) else platform
    if not isinstance(text, str) or not PLATFORM_RE.fullmatch(text):
        raise InvalidRequest(f"platform {quoted(platform)} is not a platform name: use 1-32 letters, digits, "
                             "'.', '_' or '-', e.g. android or ios")
    return text


@dataclass(frozen=True)
class DeviceReport:
    """One device's health report on one release. A later one from the same device replaces it;
    ``reports`` counts how many were merged into it (in memory, before a write)."""

    load_failures: int = 0
    inference_errors: int = 0
    inferences: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    reports: int = 1

    @property
    def failed(self) -> bool:
        return self.load_failures > 0 or self.inference_errors > 0

    @property
    def has_latency(self) -> bool:
        return self.p50_ms is not None and self.p99_ms is not None

    def replacing(self, earlier: DeviceReport) -> DeviceReport:
        """This report in place of ``earlier`` (from the same device): its figures, both counts."""
        return dataclasses.replace(self, reports=self.reports + earlier.reports)


HealthKey = tuple[str, int, str]  # (model, version, channel)
HealthBatch = Mapping[HealthKey, Mapping[str, DeviceReport]]  # -> device id -> its latest report


class Releases:
    def __init__(self, reg: Registry, keys: OtaKeys, objects: OtaObjects,
                 min_devices: int = DEFAULT_MIN_DEVICES) -> None:
        self.reg = reg
        self.keys = keys
        self.objects = objects
        self.min_devices = min_devices  # the health gate's default for new releases (TANDEM_OTA_GATE_MIN_DEVICES)

    # --- releases -----------------------------------------------------------------------------

    def release(self, name: str, version: int, channel: str = DEFAULT_CHANNEL, *, percent: float | None = None,
                min_app_version: str | None = None, max_app_version: str | None = None,
                platforms: Iterable[str] | None = None, min_os_version: str | None = None,
                min_ram_mb: int | None = None, max_failure_rate: float | None = None, min_devices: int | None = None,
                no_health_gate: bool = False, variants: Iterable[str] | None = None) -> ReleaseInfo:
        """Release ``version`` on ``channel``, or change its release. On a change, what is not given
        stays as it was; "" (or [] platforms, 0 RAM, [] variants) clears a targeting rule. Releasing a halted
        or rolled-back version again makes it active (a rolled-back one with fresh health counts).
        ``variants``: the only variants devices get (keys such as ``litert-int8``, or formats such as
        ``onnx``), so that a bad one can be held back while the others roll out.

        The objects devices will download are made first (encrypted files, delta patches from the
        versions this channel has released before), then the release is recorded."""
        check_channel(channel)
        changes = _rule_changes(percent, min_app_version, max_app_version, platforms, min_os_version, min_ram_mb,
                                max_failure_rate, min_devices, no_health_gate)
        if variants is not None:
            changes["variants"] = check_restriction(variants) or None
            check_offers(self.objects.manifest(self.reg.get(name, version).manifest_sha256),
                         changes["variants"] or ())  # type: ignore[arg-type]
        with self.reg.db.read() as s:  # every refusal before anything is written
            model = tx.model(s, name)
            tx.servable(s, model, version)  # an archived version is out of service: refused (409)
            row = s.scalar(select(Release).where(Release.model_id == model.id, Release.channel == channel,
                                                 Release.version == version))
            _check_range(changes.get("min_app_version", row.min_app_version if row else None),  # type: ignore[arg-type]
                         changes.get("max_app_version", row.max_app_version if row else None))  # type: ignore[arg-type]
            offered = changes.get("variants", row.variants if row else None)
        self._make_deliverable(name, channel, version, offered)  # type: ignore[arg-type]
        with self.reg.db.write() as s:
            model = tx.locked_model(s, name)
            tx.servable(s, model, version)
            row = s.scalar(select(Release).where(Release.model_id == model.id, Release.channel == channel,
                                                 Release.version == version))
            now = utcnow()
            if row is None:
                row = Release(model_id=model.id, version=version, channel=channel, percent=100.0,
                              min_app_version=None, max_app_version=None, platforms=[], min_os_version=None,
                              min_ram_mb=None, max_failure_rate=None, min_devices=self.min_devices, variants=None,
                              state="active", note="", created=now, updated=now)
                s.add(row)
            elif row.state == "rolled_back":
                self._reset_health(s, model.id, version, channel)
            for column, value in changes.items():
                setattr(row, column, value)
            _check_range(row.min_app_version, row.max_app_version)
            row.state, row.note, row.updated = "active", "", now
            s.flush()
            tx.bump(s)
            return self._info(s, name, row)

    def releases(self, name: str, channel: str | None = None) -> list[ReleaseInfo]:
        """The model's releases (newest version first per channel), with their health figures."""
        with self.reg.db.read() as s:
            model = tx.model(s, name)
            q = select(Release).where(Release.model_id == model.id)
            if channel is not None:
                q = q.where(Release.channel == check_channel(channel))
            rows = s.scalars(q.order_by(Release.channel, Release.version.desc())).all()
            return [self._info(s, name, r) for r in rows]

    def halt(self, name: str, version: int, channel: str = DEFAULT_CHANNEL) -> ReleaseInfo:
        """Stop a rollout where it is: devices that have the version keep it, no new ones get it."""
        with self.reg.db.write() as s:
            model = tx.locked_model(s, name)
            row = self._release(s, model, version, check_channel(channel))
            if row.state == "rolled_back":
                raise Conflict(f"{name} v{version} on {channel} is rolled back already; release it again with "
                               f"`tandem release {name} {version} --channel {channel}` first")
            if row.state == "active":
                row.state, row.note, row.updated = "halted", "halted by hand", utcnow()
                tx.bump(s)
            return self._info(s, name, row)

    def rollback(self, name: str, channel: str = DEFAULT_CHANNEL) -> ReleaseInfo:
        """Roll back the channel's current release (its newest active or halted one): its devices go
        back to the release before it. Returns the rolled-back release."""
        with self.reg.db.write() as s:
            model = tx.locked_model(s, name)
            live = s.scalars(select(Release).where(
                Release.model_id == model.id, Release.channel == check_channel(channel),
                Release.state.in_(("active", "halted"))).order_by(Release.version.desc())).all()
            if not live:
                raise NotFound(f"{name} has no active or halted release on channel {channel!r}; "
                               f"`tandem releases {name}` lists its releases")
            if len(live) == 1:
                raise Conflict(f"{name} v{live[0].version} is the only release on {channel}, so there is nothing to "
                               f"roll back to; stop it with `tandem release-halt {name} {live[0].version} "
                               f"--channel {channel}`, or release an older version first")
            row = live[0]
            row.state, row.note, row.updated = "rolled_back", f"rolled back by hand to v{live[1].version}", utcnow()
            tx.bump(s)
            return self._info(s, name, row)

    # --- pins ---------------------------------------------------------------------------------

    def pin(self, name: str, device_id: str, version: int, channel: str = DEFAULT_CHANNEL) -> PinInfo:
        """Hold one device on ``version``, whatever the channel's releases say."""
        check_channel(channel)
        check_device_id(device_id)
        with self.reg.db.read() as s:
            tx.servable(s, tx.model(s, name), version)  # an archived version is out of service: refused (409)
        self._make_deliverable(name, channel, version)
        with self.reg.db.write() as s:
            model = tx.locked_model(s, name)
            tx.servable(s, model, version)
            row = s.scalar(select(ReleasePin).where(ReleasePin.model_id == model.id, ReleasePin.channel == channel,
                                                    ReleasePin.device_id == device_id))
            if row is None:
                row = ReleasePin(model_id=model.id, channel=channel, device_id=device_id, version=version,
                                 created=utcnow())
                s.add(row)
            elif row.version == version:
                return pin_info(name, row)
            else:
                row.version, row.created = version, utcnow()
            s.flush()
            tx.bump(s)
            return pin_info(name, row)

    def unpin(self, name: str, device_id: str, channel: str = DEFAULT_CHANNEL) -> PinInfo:
        with self.reg.db.write() as s:
            model = tx.locked_model(s, name)
            row = s.scalar(select(ReleasePin).where(ReleasePin.model_id == model.id,
                                                    ReleasePin.channel == check_channel(channel),
                                                    ReleasePin.device_id == device_id))
            if row is None:
                raise NotFound(f"device {device_id!r} is not pinned on {name} channel {channel}; "
                               f"`tandem releases {name}` lists the pins")
            info = pin_info(name, row)
            s.delete(row)
            tx.bump(s)
            return info

    def pins(self, name: str, channel: str | None = None) -> list[PinInfo]:
        with self.reg.db.read() as s:
            model = tx.model(s, name)
            q = select(ReleasePin).where(ReleasePin.model_id == model.id)
            if channel is not None:
                q = q.where(ReleasePin.channel == check_channel(channel))
            return [pin_info(name, r) for r in s.scalars(q.order_by(ReleasePin.channel, ReleasePin.device_id))]

    # --- health -------------------------------------------------------------------------------

    def record_health(self, batch: HealthBatch) -> list[ReleaseInfo]:
        """Write device reports (a later report from a device replaces its earlier one on the same
        release) and the releases' figures over distinct devices, in one transaction, and apply the
        health gate. Returns the releases the gate rolled back now. Reports for versions without a
        release on their channel are dropped (the server refuses them before they get here)."""
        if not batch:
            return []
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.reg.db.write(retryable=True) as s:
                    # Locked first, as every registry writer does, so writers never wait on each other in
                    # opposite orders (the gate may change a release and the generation). It also makes
                    # the read-then-write of each device's row below an upsert no other server interleaves.
                    tx.lock(s)
                    return self._record(s, batch)
            except IntegrityError as e:
                if attempt == WRITE_ATTEMPTS:
                    raise RegistryError(f"could not record device health reports ({e.orig}); they are kept and "
                                        "retried") from e
        raise AssertionError("unreachable")

    def _record(self, s: Session, batch: HealthBatch) -> list[ReleaseInfo]:
        ids = {n: i for n, i in s.execute(select(Model.name, Model.id).where(Model.name.in_({k[0] for k in batch})))}
        tripped: list[ReleaseInfo] = []
        now = utcnow()
        for (name, version, channel), reports in batch.items():
            model_id = ids.get(name)
            release = s.scalar(select(Release).where(Release.model_id == model_id, Release.version == version,
                                                     Release.channel == channel)) if model_id else None
            if release is None or not reports:
                continue
            agg = s.scalar(select(ReleaseHealth).where(ReleaseHealth.model_id == model_id,
                                                       ReleaseHealth.version == version,
                                                       ReleaseHealth.channel == channel))
            if agg is None:
                agg = ReleaseHealth(model_id=model_id, version=version, channel=channel, reports=0, devices=0,
                                    failed_devices=0, load_failures=0, inference_errors=0, inferences=0,
                                    latency_devices=0, p50_ms_sum=0.0, p99_ms_sum=0.0, p99_ms_max=0.0, updated=now)
                s.add(agg)
            where = (DeviceHealth.model_id == model_id, DeviceHealth.version == version,
                     DeviceHealth.channel == channel)
            device_ids = list(reports)
            have: dict[str, DeviceHealth] = {}
            for i in range(0, len(device_ids), IN_CHUNK):
                chunk = device_ids[i:i + IN_CHUNK]
                have.update((r.device_id, r) for r in s.scalars(select(DeviceHealth).where(
                    *where, DeviceHealth.device_id.in_(chunk))))
            new_rows = []
            for device_id, report in reports.items():
                row = have.get(device_id)
                agg.reports += report.reports
                if row is None:
                    agg.devices += 1
                    new_rows.append({"model_id": model_id, "version": version, "channel": channel,
                                     "device_id": device_id, "reports": report.reports, "failed": report.failed,
                                     "load_failures": report.load_failures,
                                     "inference_errors": report.inference_errors, "inferences": report.inferences,
                                     "p50_ms": report.p50_ms, "p99_ms": report.p99_ms, "updated": now})
                else:
                    _count(agg, _stored(row), -1)  # the device's earlier report no longer counts
                    row.reports += report.reports
                    row.failed, row.load_failures = report.failed, report.load_failures
                    row.inference_errors, row.inferences = report.inference_errors, report.inferences
                    row.p50_ms, row.p99_ms, row.updated = report.p50_ms, report.p99_ms, now
                _count(agg, report, 1)
            if new_rows:
                s.execute(insert(DeviceHealth), new_rows)
            agg.updated = now
            s.flush()
            health = Health(agg.devices, agg.failed_devices, agg.load_failures, agg.inference_errors, agg.inferences)
            if release.state != "rolled_back" and gate_trips(release.max_failure_rate, release.min_devices, health):
                release.state, release.updated = "rolled_back", now
                release.note = (f"health gate: {health.failed_devices} of {health.devices} devices failed "
                                f"({health.failure_rate:.1%} > {release.max_failure_rate:.1%}); halted and rolled back")
                s.flush()
                tx.bump(s)
                tripped.append(self._info(s, name, release))
        return tripped

    # --- internals ----------------------------------------------------------------------------

    def _likely_sources(self, name: str, channel: str, version: int) -> set[int]:
        """Older versions devices on this channel probably hold: those released or pinned on it, and
        the version's parent. Deltas from these are made up front; others when first asked for."""
        with self.reg.db.read() as s:
            model = tx.model(s, name)
            released = set(s.scalars(select(Release.version).where(Release.model_id == model.id,
                                                                   Release.channel == channel)))
            pinned = set(s.scalars(select(ReleasePin.version).where(ReleasePin.model_id == model.id,
                                                                    ReleasePin.channel == channel)))
        parent = self.objects.manifest(self.reg.get(name, version).manifest_sha256).parent_version
        return {v for v in (*released, *pinned, parent) if v is not None and v < version}

    def _make_deliverable(self, name: str, channel: str, version: int, variants: list[str] | None = None) -> None:
        """Signing key, encrypted files and likely deltas exist before a release or pin points at them
        (``variants``: only those a release offers; None: every one)."""
        self.keys.ensure_signing_key()
        self.objects.prepare(name, version, self._likely_sources(name, channel, version), variants)

    @staticmethod
    def _release(s: Session, model: Model, version: int, channel: str) -> Release:
        row = s.scalar(select(Release).where(Release.model_id == model.id, Release.channel == channel,
                                             Release.version == version))
        if row is None:
            have = [f"v{r.version} ({r.state})" for r in s.scalars(
                select(Release).where(Release.model_id == model.id, Release.channel == channel)
                .order_by(Release.version.desc()))]
            raise NotFound(f"{model.name} v{version} is not released on channel {channel!r} (releases there: "
                           f"{', '.join(have) or 'none'}); release it with `tandem release {model.name} {version} "
                           f"--channel {channel}`")
        return row

    @staticmethod
    def _reset_health(s: Session, model_id: int, version: int, channel: str) -> None:
        s.execute(delete(ReleaseHealth).where(ReleaseHealth.model_id == model_id, ReleaseHealth.version == version,
                                              ReleaseHealth.channel == channel))
        s.execute(delete(DeviceHealth).where(DeviceHealth.model_id == model_id, DeviceHealth.version == version,
                                             DeviceHealth.channel == channel))

    def _info(self, s: Session, name: str, row: Release) -> ReleaseInfo:
        h = s.scalar(select(ReleaseHealth).where(ReleaseHealth.model_id == row.model_id,
                                                 ReleaseHealth.version == row.version,
                                                 ReleaseHealth.channel == row.channel))
        return release_info(name, row, h)


def _release_state(value: str) -> ReleaseState:
    """The state column read back as the rollout's literal (the column itself is plain text)."""
    for state in STATES:
        if value == state:
            return state
    raise RegistryError(f"a release in the database has the state {quoted(value)}, none of {', '.join(STATES)}")


def release_info(name: str, row: Release, h: ReleaseHealth | None) -> ReleaseInfo:
    health = HealthInfo()
    if h is not None:
        lat = h.latency_devices
        health = HealthInfo(h.reports, h.devices, h.failed_devices, h.load_failures, h.inference_errors,
                            h.inferences, h.p50_ms_sum / lat if lat else None, h.p99_ms_sum / lat if lat else None,
                            h.p99_ms_max if h.p99_ms_max else None)
    return ReleaseInfo(name=name, version=row.version, channel=row.channel, percent=row.percent,
                       state=_release_state(row.state),
                       min_app_version=row.min_app_version, max_app_version=row.max_app_version,
                       platforms=tuple(row.platforms or ()), min_os_version=row.min_os_version,
                       min_ram_mb=row.min_ram_mb, max_failure_rate=row.max_failure_rate, min_devices=row.min_devices,
                       variants=tuple(row.variants or ()), note=row.note, created=tx.aware(row.created), updated=tx.aware(row.updated), health=health)


def pin_info(name: str, row: ReleasePin) -> PinInfo:
    return PinInfo(name=name, channel=row.channel, device_id=row.device_id, version=row.version,
                   created=tx.aware(row.created))


def _stored(row: DeviceHealth) -> DeviceReport:
    return DeviceReport(row.load_failures, row.inference_errors, row.inferences, row.p50_ms, row.p99_ms, row.reports)


def _count(agg: ReleaseHealth, report: DeviceReport, sign: int) -> None:
    """Add (``sign`` 1) or take away (-1) one device's report from its release's figures."""
    agg.failed_devices += sign * int(report.failed)
    agg.load_failures += sign * report.load_failures
    agg.inference_errors += sign * report.inference_errors
    agg.inferences += sign * report.inferences
    if report.has_latency:
        assert report.p50_ms is not None and report.p99_ms is not None
        agg.latency_devices += sign
        agg.p50_ms_sum += sign * report.p50_ms
        agg.p99_ms_sum += sign * report.p99_ms
        if sign > 0:
            agg.p99_ms_max = max(agg.p99_ms_max, report.p99_ms)


def _check_range(low: str | None, high: str | None) -> None:
    if low and high and parse_version(low) > parse_version(high):
        raise InvalidRequest(f"min_app_version {low} is above max_app_version {high}: no app could get this release")


def _rule_changes(percent: float | None, min_app_version: str | None, max_app_version: str | None,
                  platforms: Iterable[str] | None, min_os_version: str | None, min_ram_mb: int | None,
                  max_failure_rate: float | None, min_devices: int | None, no_health_gate: bool) -> dict[str, object]:
    """The release columns to set, checked; what is None is left as it is."""
    out: dict[str, object] = {}
    if percent is not None:
        if not isinstance(percent, int | float) or not math.isfinite(percent) or not 0 <= percent <= 100:
            raise InvalidRequest(f"percent {percent!r} is not between 0 and 100")
        out["percent"] = round(float(percent), 2)  # the buckets have two decimals
    for column, text in (("min_app_version", min_app_version), ("max_app_version", max_app_version),
                         ("min_os_version", min_os_version)):
        if text is not None:
            out[column] = parse_version(text, column).text if text.strip() else None
    if platforms is not None:
        out["platforms"] = sorted({check_platform(p) for p in platforms})
    if min_ram_mb is not None:
        if isinstance(min_ram_mb, bool) or not isinstance(min_ram_mb, int) or not 0 <= min_ram_mb <= MAX_RAM_MB:
            raise InvalidRequest(f"min_ram_mb {min_ram_mb!r} is not a whole number of megabytes from 0 to {MAX_RAM_MB}")
        out["min_ram_mb"] = min_ram_mb or None
    if no_health_gate and (max_failure_rate is not None or min_devices is not None):
        raise InvalidRequest("give either --no-health-gate or --max-failure-rate/--min-devices, not both")
    if no_health_gate:
        out["max_failure_rate"] = None
    if max_failure_rate is not None:
        if not isinstance(max_failure_rate, int | float) or not 0 <= max_failure_rate < 1:
            raise InvalidRequest(f"max_failure_rate {max_failure_rate!r} is not a share from 0 to below 1 (0.05 is 5%)")
        out["max_failure_rate"] = float(max_failure_rate)
    if min_devices is not None:
        if isinstance(min_devices, bool) or not isinstance(min_devices, int) or not 1 <= min_devices <= 10**9:
            raise InvalidRequest(f"min_devices {min_devices!r} is not a whole number of devices from 1")
        out["min_devices"] = min_devices
    return out
