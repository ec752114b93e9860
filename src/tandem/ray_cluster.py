"""Ray for Tandem (`tandem train --workers`, `tandem serve --ray`): a local instance sized to this
machine, or an existing cluster (``ray://host:10001``, or ``auto`` for the one `ray start` runs
here), with Ray's own logging kept to warnings and its session files under one short folder."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from tandem.errors import ClusterError, ConfigError
from tandem.settings import RaySettings, RegistrySettings


def require_ray() -> ModuleType:
    try:
        import ray
    except ModuleNotFoundError as e:
        raise ClusterError(f"running on Ray needs the ray extras ({e.name} is not installed): "
                           "pip install 'tandem[ray]'") from e
    return ray


def local_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def connected(address: str | None, settings: RaySettings, verbose: bool = False) -> Iterator[bool]:
    """Connect this process to Ray for the block; yields whether it started a local instance (which
    it then stops). A process already connected (a test session, a notebook) keeps its connection."""
    ray = require_ray()
    if ray.is_initialized():
        yield False
        return
    # Nothing here may phone home, and the token-auth notice would be printed on every command.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if not verbose:  # "Started Serve…", "Application … is ready": the CLI says what matters itself
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    common = {"logging_level": logging.INFO if verbose else logging.WARNING, "log_to_driver": verbose}
    address = address or settings.ray_address
    try:
        if address:
            ray.init(address=address, **common)
        else:
            settings.ray_temp_dir.mkdir(parents=True, exist_ok=True)
            # The dashboard would cost a process and ~150 MB for pages nobody opens from a CLI run.
            ray.init(num_cpus=local_cpus(), include_dashboard=False, _temp_dir=str(settings.ray_temp_dir), **common)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or f"a local instance (session files in {settings.ray_temp_dir})"
        raise ClusterError(f"cannot start or reach Ray at {where}: {e}") from e
    try:
        yield not address
    finally:
        ray.shutdown()
        collect_ray_leftovers()


def collect_ray_leftovers() -> None:
    """Collect what ray.shutdown() leaves for the garbage collector (its log files and a watcher
    subprocess, unclosed): otherwise their ResourceWarnings surface later, at whatever line happens to
    trigger a collection, in code that has nothing to do with Ray."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def cluster_cpus() -> float:
    ray = require_ray()
    return float(ray.cluster_resources().get("CPU", 0.0))


@dataclass(frozen=True)
class TrainStorage:
    """Where Ray Train keeps one run's checkpoints while it runs (RunConfig's storage_path and
    storage_filesystem): a folder, or a prefix of an S3 bucket (``filesystem``: pyarrow's S3 client)."""

    path: str
    filesystem: Any = None

    def remove(self) -> None:
        if self.filesystem is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        with contextlib.suppress(OSError):  # gone already, or never written
            self.filesystem.delete_dir(self.path)


def train_storage(where: str | None, local: Path, name: str, s3: RegistrySettings) -> TrainStorage:
    """TANDEM_RAY_STORAGE (``where``) for one run: below s3://BUCKET/PREFIX (reached with the artifact
    store's endpoint, region and credentials, ``s3``) or a folder, a folder of its own (``name`` and a
    random suffix); unset: the folder ``local`` (one machine, or a run folder every node mounts)."""
    if not where:
        return TrainStorage(str(local))
    run = f"{name}-{secrets.token_hex(4)}"
    if not where.startswith("s3://"):
        if not Path(where).is_absolute():
            raise ConfigError(f"TANDEM_RAY_STORAGE={where!r}: expected s3://BUCKET/PREFIX or an absolute folder "
                              "that every node mounts")
        return TrainStorage(str(Path(where) / run))
    bucket_prefix = where.removeprefix("s3://").strip("/")
    if not bucket_prefix:
        raise ConfigError(f"TANDEM_RAY_STORAGE={where!r} names no bucket: expected s3://BUCKET/PREFIX")
    return TrainStorage(f"{bucket_prefix}/{run}", s3_filesystem(s3))


def s3_filesystem(s3: RegistrySettings) -> Any:
    """pyarrow's S3 client (Ray Train's storage layer) for the bucket's endpoint, region and credentials as
    the artifact store reads them (TANDEM_S3_*, else AWS's own chain)."""
    from pyarrow import fs  # type: ignore[import-untyped]

    options: dict[str, Any] = {"region": s3.s3_region or os.environ.get("AWS_REGION")
                               or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    endpoint = s3.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint)
        if not parts.netloc:
            raise ConfigError(f"TANDEM_S3_ENDPOINT_URL={endpoint!r}: expected a URL such as http://127.0.0.1:9000")
        options |= {"endpoint_override": parts.netloc, "scheme": parts.scheme or "https"}
    if s3.s3_access_key_id:
        secret = s3.s3_secret_access_key.get_secret_value() if s3.s3_secret_access_key else ""
        options |= {"access_key": s3.s3_access_key_id, "secret_key": secret}
    return fs.S3FileSystem(**options)
