"""API keys: create, list, revoke, verify. A key is ``tdm_<key id>_<secret>``; only the secret's
hash is stored (security/apikeys.py), compared in constant time. Scopes: predict, device, admin;
a device key may be limited to some models or apps (its model scope, docs/ota.md)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import select

from tandem.bundle import NAME_RE
from tandem.errors import InvalidRequest, NotFound
from tandem.registry.db import Database
from tandem.registry.records import EVERY_MODEL, SCOPES, KeyInfo, ModelScope, Scope
from tandem.registry.schema import ApiKey, utcnow
from tandem.registry.tx import aware
from tandem.security import apikeys

MAX_SCOPE_NAMES = 100
MAX_LABEL = 200
# Compared against when a key id is unknown, so that path costs the same as a wrong secret.
NO_SUCH_HASH = "0" * 64


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

    def create(self, scope: Scope, label: str = "", model_scope: ModelScope = EVERY_MODEL) -> tuple[str, KeyInfo]:
        """A new key: the token (shown to the user once, never stored) and its record. ``model_scope``
        (device keys only): the models it, and the devices registered with it, may see over the air."""
        if scope not in SCOPES:
            raise InvalidRequest(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        label = (label or "").strip()
        if len(label) > MAX_LABEL:
            raise InvalidRequest(f"the label is {len(label)} characters long; keep it to {MAX_LABEL}")
        model_scope = check_model_scope(model_scope)
        if not model_scope.everything and scope != "device":
            raise InvalidRequest(f"--model and --app limit what a device key (and its devices) may download; a "
                                 f"{scope} key has no model scope (docs/ota.md)")
        token, parsed = apikeys.new_token()
        row = ApiKey(key_id=parsed.key_id, secret_hash=apikeys.hash_secret(parsed.secret), scope=scope,
                     label=label, created=utcnow(), revoked=None, models=list(model_scope.models) or None,
                     apps=list(model_scope.apps) or None)
        with self.db.write() as s:
            s.add(row)
        return token, key_info(row)

    def list(self) -> list[KeyInfo]:
        with self.db.read() as s:
            return [key_info(k) for k in s.scalars(select(ApiKey).order_by(ApiKey.created, ApiKey.key_id))]

    def revoke(self, key_id: str) -> KeyInfo:
        with self.db.write() as s:
            row = s.get(ApiKey, key_id) if isinstance(key_id, str) else None
            if row is None:
                raise NotFound(f"no API key with id {key_id!r}; `tandem keys list` shows the key ids")
            if row.revoked is None:
                row.revoked = utcnow()
            return key_info(row)

    def verify(self, token: str) -> KeyInfo | None:
        """The key's record if ``token`` is a known, unrevoked key; None otherwise (never raises for a
        bad token, and never logs it)."""
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


def key_info(row: ApiKey) -> KeyInfo:
    return KeyInfo(key_id=row.key_id, scope=cast(Scope, row.scope), label=row.label, created=aware(row.created),
                   revoked=aware(row.revoked), model_scope=stored_scope(row.models, row.apps))
