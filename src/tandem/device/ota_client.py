"""The device's HTTP side of OTA (docs/ota.md): registration, check, data key, report, and resumable
downloads. Registration sends the app's device API key; every other call this device's own
credential.

Failures come in two kinds, kept apart because an app decides differently on each (STYLE 8):
``ServerUnreachable`` — no answer (offline, timeout, a cut connection) — and the server's own
refusals, mapped from the status to the matching TandemError (401 Unauthenticated, 404 NotFound…).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from tandem.device import answers, faults
from tandem.device.identity import Registration
from tandem.device.payload import MAX_ENVELOPE
from tandem.errors import (
    ChecksumError,
    DecryptionError,
    InvalidRequest,
    ServerUnreachable,
    SignatureError,
    StorageFull,
    TandemError,
)
from tandem.protocol import status
from tandem.protocol.origins import origin
from tandem.security.apikeys import parse_device

log = logging.getLogger(__name__)

STEP = 16 * 1024  # a progress callback per 16 KiB: ~220 for a 3.6 MB model
# What the device reads of an answer at most (answers.py): a registration, a data key, a report's
# answer or an error message are a few hundred bytes; a check answer is capped by payload.MAX_ENVELOPE.
SMALL_ANSWER = 64 * 1024
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 3  # a mirror may redirect this often, each time to an origin the signed answer lists
MIRROR_RETRY_S = 60.0  # a mirror that refused (expired, 404, wrong bytes) is not asked again for this long


@dataclass(frozen=True)
class Progress:
    """How far an update's downloads are: ``done`` of ``total`` bytes, now in ``file``."""

    done: int
    total: int
    file: str


ProgressCallback = Callable[[Progress], None]


class Transfer:
    """Counts bytes over every download of one update and reports them after each chunk.

    ``done`` never goes back: when a download has to start again (a damaged partial file, a
    delta abandoned for the full file), ``total`` grows instead, so ``done == total`` at the end.
    """

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self.fetched = 0  # bytes that crossed the network in this update (resumed bytes excluded)
        self._callback = callback
        self._counted: dict[str, int] = {}  # per download: bytes already in ``done``

    def grow(self, extra: int) -> None:
        self.total += extra

    def advance(self, n: int, file: str, fetched: bool = True) -> None:
        self.done += n
        self._counted[file] = self._counted.get(file, 0) + n
        if fetched:
            self.fetched += n
        if self._callback is not None:
            self._callback(Progress(self.done, max(self.total, self.done), file))

    def resume(self, file: str, have: int) -> None:
        """``have`` bytes of ``file`` are on disk already (some perhaps counted by an earlier try)."""
        if have > self._counted.get(file, 0):
            self.advance(have - self._counted.get(file, 0), file, fetched=False)

    def restart(self, file: str) -> None:
        """``file`` starts again from its first byte: what was counted of it is to come again."""
        self.grow(self._counted.pop(file, 0))


def refusal(r: httpx.Response, what: str, registering: bool = False) -> TandemError:
    """The TandemError for a non-success answer to ``what`` (tandem.protocol.status), with the server's message."""
    message = status.error_message(r.content) or r.text[:200] or r.reason_phrase
    msg = f"{what}: the server answered {r.status_code}: {message}"
    if r.status_code == 401:
        msg += (" (is the app's device API key right and not revoked?)" if registering else
                " (this device's credential was refused: revoked by the operator, or the server's registry is "
                "another; ModelUpdater.register(again=True) enrols anew)")
    return status.error_for(r.status_code, msg, status.retry_after(r.headers.get("retry-after")))


class OtaClient:
    """``api_key``: the app's device API key, sent only to register; ``credential``: this device's own
    credential (registering first if need be), sent on every other call."""

    def __init__(self, server_url: str, api_key: str, timeout: httpx.Timeout,
                 transport: httpx.BaseTransport | None = None, credential: Callable[[], str] | None = None) -> None:
        self.http = httpx.Client(base_url=server_url.rstrip("/"), timeout=timeout, transport=transport,
                                 follow_redirects=False)
        # Mirrors (a bucket's presigned URLs, a CDN) get no credential: a client of their own, with no headers.
        self.direct = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)
        self._failed_mirrors: dict[str, float] = {}  # URL -> time.monotonic() it refused
        self._api_key = api_key
        self._credential = credential or (lambda: api_key)

    def close(self) -> None:
        self.http.close()
        self.direct.close()

    def _auth(self, what: str) -> dict[str, str]:
        try:
            credential = self._credential()  # registers the device first if it has no credential yet
        except ServerUnreachable as e:
            raise ServerUnreachable(f"{what}: {e}") from e
        return {"authorization": f"Bearer {credential}"}

    def _post(self, path: str, body: dict[str, Any] | None, what: str, cap: int,
              headers: dict[str, str] | None = None) -> httpx.Response:
        """POST ``body`` and read the answer within ``cap`` bytes (answers.py)."""
        headers = headers if headers is not None else self._auth(what)
        try:
            return answers.send(self.http, self.http.build_request("POST", path, json=body, headers=headers), cap, what)
        except httpx.TransportError as e:
            raise ServerUnreachable(f"{what}: cannot reach {self.http.base_url} ({e}); the installed model "
                                    "keeps running, try again when online") from e

    def register(self) -> Registration:
        """Enrol this device with the app's device API key: its server-assigned id and credential."""
        r = self._post("/v1/devices", None, "device registration", SMALL_ANSWER,
                       {"authorization": f"Bearer {self._api_key}"})
        if r.status_code not in (200, 201):
            raise refusal(r, "device registration", registering=True)
        try:
            body = r.json()
            registration = Registration(body["device_id"], body["credential"])
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidRequest(f"device registration: the server's answer is malformed ({e})") from e
        parsed = parse_device(registration.credential)
        if parsed is None or parsed.key_id != registration.device_id:
            raise InvalidRequest("device registration: the server's answer holds no valid credential for device "
                                 f"{str(registration.device_id)[:40]!r}")
        return registration

    def check(self, body: dict[str, Any]) -> bytes | None:
        """The signed envelope's bytes, or None when the device is current (204)."""
        r = self._post("/v1/ota/check", body, "update check", MAX_ENVELOPE)
        if r.status_code == 204:
            return None
        if r.status_code != 200:
            raise refusal(r, "update check")
        return r.content

    def data_key(self, model: str, version: int, device: dict[str, Any]) -> bytes:
        """``device``: the same fields the check sends (the server gives a key only for a version
        it offers to this device, judged by the same rules)."""
        r = self._post("/v1/ota/keys", {**device, "model": model, "version": version},
                       f"data key for {model} v{version}", SMALL_ANSWER)
        if r.status_code != 200:
            raise refusal(r, f"data key for {model} v{version}")
        try:
            key = base64.b64decode(r.json()["key"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error) as e:
            raise DecryptionError(f"the server's data key answer for {model} v{version} is malformed ({e})") from e
        if len(key) != 32:
            raise DecryptionError(f"the server's data key for {model} v{version} has {len(key)} bytes, not 32")
        return key

    def report(self, body: dict[str, Any]) -> None:
        r = self._post("/v1/ota/report", body, "health report", SMALL_ANSWER)
        if r.status_code not in (200, 202, 204):
            raise refusal(r, "health report")

    def download(self, url: str, part: Path, size: int, sha256: str, name: str, transfer: Transfer,
                 mirrors: Sequence[str] = (), origins: Collection[str] = ()) -> bytes:
        """The bytes at ``url``, resumed from ``part`` if a cut download left some there, checked
        against ``size`` and ``sha256`` (of the bytes as sent). A cut connection leaves ``part``
        for the next try and raises ServerUnreachable.

        ``mirrors``: the same bytes elsewhere (a bucket's presigned URL, a CDN: docs/ota.md), tried first, in
        order, without this device's credential; a mirror may redirect only to ``origins`` (the signed
        answer's download_origins). Whatever goes wrong with one (refused, expired, unreachable, cut, wrong
        bytes) falls back to the next, and finally to ``url`` on the update server, which resumes from what
        the part file holds: every source sends the same content-addressed bytes."""
        for mirror in mirrors:
            if time.monotonic() - self._failed_mirrors.get(mirror, -MIRROR_RETRY_S) < MIRROR_RETRY_S:
                continue
            try:
                return self._download(mirror, part, size, sha256, name, transfer, origins)
            except StorageFull:
                raise
            except TandemError as e:
                if not isinstance(e, ServerUnreachable):  # a cut or unreachable mirror may work at the next try
                    if len(self._failed_mirrors) > 1000:
                        self._failed_mirrors.clear()
                    self._failed_mirrors[mirror] = time.monotonic()
                log.warning("%s: the download from %s failed (%s); downloading from the update server", name,
                            origin(mirror), e)
        return self._download(url, part, size, sha256, name, transfer, None)

    def _download(self, url: str, part: Path, size: int, sha256: str, name: str, transfer: Transfer,
                  origins: Collection[str] | None) -> bytes:
        """``download`` from one source: the update server (``origins`` None) or a mirror."""
        part.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            have = part.stat().st_size if part.exists() else 0
            if have > size:
                part.unlink()
                have = 0
            if have < size:
                self._fetch(url, part, have, size, name, transfer, origins)
            else:
                transfer.resume(name, have)  # complete from an earlier call
            data = part.read_bytes()
            if len(data) == size and hashlib.sha256(data).hexdigest() == sha256:
                return data
            part.unlink()
            if attempt == 0 and have > 0:
                transfer.restart(name)  # the resumed part was bad: once more from the first byte
                continue
            raise ChecksumError(f"{name}: downloaded {len(data)} bytes with sha256 "
                                f"{hashlib.sha256(data).hexdigest()[:12]}…, the signed manifest says {size} bytes "
                                f"with sha256 {sha256[:12]}…; refusing it (the installed model is untouched)")
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _get(self, url: str, headers: dict[str, str], name: str,
             origins: Collection[str] | None) -> Iterator[httpx.Response]:
        """The streamed answer to GET ``url``: from the update server with this device's credential (``origins``
        None), or from a mirror with no credential, following its redirects only to ``origins``."""
        if origins is None:
            with self.http.stream("GET", url, headers={**headers, **self._auth(f"download of {name}")}) as r:
                yield r
            return
        for _ in range(MAX_REDIRECTS + 1):
            with self.direct.stream("GET", url, headers=headers) as r:
                if r.status_code not in REDIRECTS:
                    yield r
                    return
                location = r.headers.get("location", "")
            target = urljoin(url, location)
            try:
                allowed = origin(target) in origins
            except ValueError as e:
                raise SignatureError(f"download of {name}: {origin(url)} redirected to {location[:120]!r} ({e}); "
                                     "not following it") from e
            if not allowed:
                raise SignatureError(f"download of {name}: {origin(url)} redirected to {origin(target)}, which the "
                                     "signed answer does not list in download_origins; not following it")
            url = target
        raise SignatureError(f"download of {name}: more than {MAX_REDIRECTS} redirects; not following them")

    def _fetch(self, url: str, part: Path, have: int, size: int, name: str, transfer: Transfer,
               origins: Collection[str] | None = None) -> None:
        headers = {"range": f"bytes={have}-"} if have else {}
        written = have
        source = "the server" if origins is None else origin(url)
        try:
            # Raw bytes only (no encoding asked for, none taken): the signed size caps what is read.
            with self._get(url, {**headers, **answers.IDENTITY}, name, origins) as r:
                if r.status_code == 416 and have:
                    part.unlink()  # our partial file is not a prefix the server recognises
                    transfer.restart(name)
                    return self._fetch(url, part, 0, size, name, transfer, origins)
                if r.status_code == 206:
                    m = _RANGE.match(r.headers.get("content-range", ""))
                    if m is None or int(m.group(1)) != have:
                        raise ChecksumError(f"{name}: asked to resume at byte {have}, {source} answered "
                                            f"Content-Range {r.headers.get('content-range')!r}")
                    transfer.resume(name, have)
                    mode = "ab"
                elif r.status_code == 200:
                    transfer.restart(name)  # no Range asked, or the server ignored it: from byte 0
                    written, mode = 0, "wb"
                else:
                    what = f"download of {name}" + ("" if origins is None else f" from {source}")
                    raise refusal(answers.read(r, SMALL_ANSWER, what), what)
                if r.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
                    raise ChecksumError(f"{name}: {source} sent it encoded ({r.headers['content-encoding'][:40]!r}), "
                                        "not as the signed bytes; refusing it")
                with open(part, mode) as f:
                    # Taken as received (re-chunking would hold back bytes a cut connection then loses),
                    # written and reported in steps of STEP bytes so that progress moves smoothly.
                    for received in answers.raw_chunks(r):
                        if written + len(received) > size:
                            raise ChecksumError(f"{name}: {source} sent more than the {size} bytes the signed "
                                                "manifest promises; refusing it")
                        for i in range(0, len(received), STEP):
                            piece = received[i : i + STEP]
                            f.write(piece)
                            f.flush()  # in the kernel's hands: a killed process keeps what it received
                            written += len(piece)
                            transfer.advance(len(piece), name)
                            if written < size:
                                faults.reached("download")  # part of the file here, the rest still to come
                    os.fsync(f.fileno())
        except httpx.TransportError as e:
            raise ServerUnreachable(f"download of {name} from {source} cut at byte {written} of {size} ({e}); the "
                                    "next try resumes from there, the installed model keeps running") from e
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
