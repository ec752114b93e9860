"""API keys: create, list, revoke, verify. A key is ``tdm_<key id>_<secret>``; only the secret's
hash is stored (security/apikeys.py), compared in constant time. Scopes: predict, device, train, admin;
a device key may be limited to some models or apps (its model scope, docs/ota.md). A key may have a
token bucket of its own (requests per second and burst, in place of the server's default for its
scope) and an expiry, after which it is refused as a revoked key is."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from tandem.bundle import NAME_RE
from tandem.errors import Conflict, InvalidRequest, NotFound
from tandem.registry.db import Database
from tandem.registry.expiry import check_expiry
from tandem.registry.records import EVERY_MODEL, SCOPES, KeyInfo, ModelScope, Scope
from tandem.registry.schema import ApiKey, utcnow
from tandem.registry.tx import aware
from tandem.security import apikeys

MAX_SCOPE_NAMES = 100
MAX_LABEL = 200
# Compared against when a key id is unknown, so that path costs the same as a wrong secret.
NO_SUCH_HASH = "0" * 64
# Bounds of a key's own bucket: generous, but a typo (an extra digit or three) is caught, not stored.
MAX_RATE_PER_S = 1_000_000.0
MAX_BURST = 10_000_000
# --rate without --burst: a bucket of this many seconds' requests, as the server's defaults (1,000/s, 2,000).
BURST_SECONDS = 2


def check_limits(rate_per_s: float | None, burst: int | None) -> tuple[float | None, int | None]:
    """A key's own (requests/s, burst), checked; a rate without a burst gets BURST_SECONDS' worth."""
    if rate_per_s is not None:
        if isinstance(rate_per_s, bool) or not isinstance(rate_per_s, int | float) or not (
                math.isfinite(rate_per_s) and 0 < rate_per_s <= MAX_RATE_PER_S):
            raise InvalidRequest(f"rate {rate_per_s!r:.40} is not one: give requests per second, more than 0 and at "
                                 f"most {MAX_RATE_PER_S:,.0f} (0.5 is one request every 2 s)")
        rate_per_s = float(rate_per_s)
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_BURST):
        raise InvalidRequest(f"burst {burst!r:.40} is not one: give the requests a key may make at once, a whole "
                             f"number from 1 to {MAX_BURST:,}")
    if rate_per_s is not None and burst is None:
        burst = min(MAX_BURST, max(1, math.ceil(rate_per_s * BURST_SECONDS)))
    return rate_per_s, burst


def check_model_scope(scope: ModelScope) -> ModelScope:
    """The scope with its names checked (model and app names as manifests spell them), each once, sorted."""
    for kind, names in (("model", scope.models), ("app", scope.apps)):
        bad = [n for n in names if not isinstance(n, str) or not NAME_RE.fullmatch(n)]
        if bad:
            raise InvalidRequest(f"{kind} name {bad[0]!r:.80} is not one: names are 1-64 letters, digits, '.', '_' "
                                 "or '-'")
        if len(set(names)) > MAX_SCOPE_NAMES:
            raise InvalidRequest(f"a key may name at most {MAX_SCOPE_NAMES} {kind}s")
    return ModelScope(tuple(sorted(set(scope.models))), tuple(sorted(set(scope.apps))))


def stored_scope(models: list[str] | None, apps: list[str] | None) -> ModelScope:
    return ModelScope(tuple(models or ()), tuple(apps or ()))


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, scope: Scope, label: str = "", model_scope: ModelScope = EVERY_MODEL,
               rate_per_s: float | None = None, burst: int | None = None,
               expires: datetime | None = None) -> tuple[str, KeyInfo]:
        """A new key: the token (shown to the user once, never stored) and its record. ``model_scope``
        (device keys only): the models it, and the devices registered with it, may see over the air.
        ``rate_per_s``, ``burst``: its own token bucket (None: the server's default for its scope; a
        rate alone gets a burst of BURST_SECONDS' requests). ``expires``: an aware time, in the future."""
        if scope not in SCOPES:
            raise InvalidRequest(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        label = (label or "").strip()
        if len(label) > MAX_LABEL:
            raise InvalidRequest(f"the label is {len(label)} characters long; keep it to {MAX_LABEL}")
        model_scope = check_model_scope(model_scope)
        if not model_scope.everything and scope != "device":
            raise InvalidRequest(f"--model and --app limit what a device key (and its devices) may download; a "
                                 f"{scope} key has no model scope (docs/ota.md)")
        rate_per_s, burst = check_limits(rate_per_s, burst)
        expires = None if expires is None else check_expiry(expires)
        token, parsed = apikeys.new_token()
        row = ApiKey(key_id=parsed.key_id, secret_hash=apikeys.hash_secret(parsed.secret), scope=scope,
                     label=label, created=utcnow(), revoked=None, models=list(model_scope.models) or None,
                     apps=list(model_scope.apps) or None, rate_per_s=rate_per_s, burst=burst, expires=expires)
        with self.db.write() as s:
            s.add(row)
        return token, key_info(row)

    def list(self) -> list[KeyInfo]:
        with self.db.read() as s:
            return [key_info(k) for k in s.scalars(select(ApiKey).order_by(ApiKey.created, ApiKey.key_id))]

    def revoke(self, key_id: str) -> KeyInfo:
        with self.db.write() as s:
            row = _row(s, key_id)
            if row.revoked is None:
                row.revoked = utcnow()
            return key_info(row)

    def update(self, key_id: str, rate_per_s: float | None = None, burst: int | None = None,
               expires: datetime | None = None, default_limits: bool = False, never_expires: bool = False) -> KeyInfo:
        """Change a live key's own bucket (``rate_per_s``/``burst`` as in create; ``default_limits``: back to
        the server's default) or its expiry (``never_expires``: none). Running servers see the change
        within TANDEM_KEY_CACHE_S. A revoked or expired key stays dead: make a new one."""
        if default_limits and (rate_per_s is not None or burst is not None):
            raise InvalidRequest("give a rate and burst, or go back to the server's default limits, not both")
        if never_expires and expires is not None:
            raise InvalidRequest("give an expiry, or make the key never expire, not both")
        if rate_per_s is None and burst is None and expires is None and not (default_limits or never_expires):
            raise InvalidRequest("nothing to change: give a rate, a burst or an expiry (`tandem keys update --help`)")
        limits = check_limits(rate_per_s, burst)
        expires = None if expires is None else check_expiry(expires)
        with self.db.write() as s:
            row = _row(s, key_id)
            if row.revoked is not None:
                raise Conflict(f"key {row.key_id} is revoked; create a new one with `tandem keys create`")
            info = key_info(row)
            if info.expired(datetime.now(UTC)):
                raise Conflict(f"key {row.key_id} expired at {info.expires:%Y-%m-%d %H:%M:%S} UTC; create a new one "
                               "with `tandem keys create`")
            if default_limits:
                row.rate_per_s, row.burst = None, None
            elif rate_per_s is not None:
                row.rate_per_s, row.burst = limits
            elif burst is not None:
                row.burst = burst
            if never_expires:
                row.expires = None
            elif expires is not None:
                row.expires = expires
            return key_info(row)

    def verify(self, token: str) -> KeyInfo | None:
        """The key's record if ``token`` is a known, unrevoked key; None otherwise (never raises for a
        bad token, and never logs it). An expired key's record comes back too, so that the caller can
        say why it is refused: check ``KeyInfo.expired(now)`` on every use."""
        parsed = apikeys.parse(token)
        if parsed is None:
            return None
        with self.db.read() as s:
            row = s.get(ApiKey, parsed.key_id)
            stored = row.secret_hash if row is not None else NO_SUCH_HASH
            matches = apikeys.secret_matches(parsed.secret, stored)
            if row is None or not matches or row.revoked is not None:
                return None
            return key_info(row)


def _row(s: Session, key_id: str) -> ApiKey:
    row = s.get(ApiKey, key_id) if isinstance(key_id, str) else None
    if row is None:
        raise NotFound(f"no API key with id {key_id!r}; `tandem keys list` shows the key ids")
    return row


def key_info(row: ApiKey) -> KeyInfo:
    return KeyInfo(key_id=row.key_id, scope=cast(Scope, row.scope), label=row.label, created=aware(row.created),
                   revoked=aware(row.revoked), model_scope=stored_scope(row.models, row.apps),
                   rate_per_s=row.rate_per_s, burst=row.burst, expires=aware(row.expires))
