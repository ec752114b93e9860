"""The registry's two databases for tests: a SQLite file under a temporary TANDEM_HOME, and the real
PostgreSQL server (127.0.0.1:5432, database ``test``) with each test in a schema of its own; and its two
artifact stores: objects/ under that home, or a bucket of its own on a real S3-compatible server (the
``s3`` fixture)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tandem.bundle import Manifest, TensorSpec, write_manifest
from tandem.bundle.preprocess import NormalizeSpec, PreprocessSpec
from tandem.registry.artifacts import ArtifactStore, LocalStore
from tandem.settings import Settings
from tandem.testing.s3 import S3Server

POSTGRES_URL = os.environ.get("TANDEM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Backend:
    kind: str  # "sqlite" or "postgresql"
    home: Path
    url: str | None  # None: the SQLite file under home
    # The artifact settings of an S3 bucket (S3Server.settings); empty: objects/ under home.
    s3: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> str:
        return "s3" if self.s3 else "local"

    def settings(self) -> Settings:
        # Every artifact setting given, so that TANDEM_* variables of the machine running the tests do not leak in.
        return Settings(home=self.home, database_url=self.url, **{**LOCAL_ARTIFACTS, **self.s3})

    def env(self) -> dict[str, str]:
        """Environment for a `tandem` subprocess using this registry (empty values: SQLite, local objects)."""
        return {"TANDEM_HOME": str(self.home), "TANDEM_DATABASE_URL": self.url or "",
                **{f"TANDEM_{k.upper()}": v or "" for k, v in {**LOCAL_ARTIFACTS, **self.s3}.items()}}


LOCAL_ARTIFACTS: dict[str, str | None] = {"artifacts": None, "s3_endpoint_url": None, "s3_region": None,
                                          "s3_access_key_id": None, "s3_secret_access_key": None}


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose connections see only a fresh, empty schema (dropped afterwards)."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as e:
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL} (set TANDEM_TEST_POSTGRES_URL): {e.orig}")
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextlib.contextmanager
def backend(kind: str, home: Path, s3: S3Server | None = None) -> Iterator[Backend]:
    """A registry on database ``kind``, its objects in a fresh bucket of ``s3`` if given."""
    artifacts = s3.settings(s3.new_bucket()) if s3 is not None else {}
    if kind == "sqlite":
        yield Backend(kind, home, None, artifacts)
    else:
        with postgres_schema() as url:
            yield Backend(kind, home, url, artifacts)


def backend_fixture(request: pytest.FixtureRequest, home: Path) -> contextlib.AbstractContextManager[Backend]:
    """``backend`` for a fixture parametrized with "sqlite", "postgresql" or "<database>+s3"."""
    kind, _, store = request.param.partition("+")
    return backend(kind, home, request.getfixturevalue("s3") if store == "s3" else None)


def damage(store: ArtifactStore, sha256: str, at: int = 100) -> None:
    """Flip one byte of a stored object, keeping its size (what bit rot, or a hand that wrote over it, does)."""
    data = bytearray(store.read(sha256))
    data[at] ^= 0xFF
    if isinstance(store, LocalStore):
        path = store.path(sha256)
        os.chmod(path, 0o644)
        path.write_bytes(bytes(data))
    else:  # an object is changed in a bucket only by a whole new upload: what a wrong writer would do
        import obstore

        obstore.put(store._s3, store._key(sha256), bytes(data))  # type: ignore[attr-defined]


def make_bundle(root: Path, name: str = "faces", seed: bytes = b"v1") -> Path:
    """A small valid bundle (placeholder model bytes: the registry never runs the model)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(b"fp32 model " + seed * 500)
    (root / "model.int8.onnx").write_bytes(b"int8 model " + seed * 100)
    (root / "extra").mkdir(exist_ok=True)
    (root / "extra" / "gallery.npz").write_bytes(b"gallery")  # shared by every version: stored once
    write_manifest(root, Manifest(
        name=name,
        inputs=[TensorSpec(name="pixels", dtype="uint8", shape=[-1, 100, 75, 3])],
        outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2]),
                 TensorSpec(name="embedding", dtype="float32", shape=[-1, 8])],
        preprocessing=PreprocessSpec(height=100, width=75,
                                     normalize_in_graph=NormalizeSpec(mean=(0.5,) * 3, std=(0.2,) * 3)),
        labels=["a", "b"],
        models={"fp32": "model.onnx", "int8": "model.int8.onnx"},
        training={"data": "test bundle", "seed": 7, "epochs": 3}, metrics={"test_top1_fp32": 0.5},
    ))
    return root
