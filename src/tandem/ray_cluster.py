"""Ray for Tandem (`tandem train --workers`, `tandem serve --ray`): a local instance sized to this
machine, or an existing cluster (``ray://host:10001``, or ``auto`` for the one `ray start` runs
here), with Ray's own logging kept to warnings and its session files under one short folder."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

from tandem.errors import ClusterError
from tandem.settings import RaySettings


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
