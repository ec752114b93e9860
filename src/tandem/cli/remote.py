"""`tandem train --remote URL`: the same training on your own training service (a `tandem serve` with
TANDEM_RAY_JOBS_ADDRESS, docs/scale.md): pack the class folders, upload them with the spec, follow the
job with the same progress bar as a local run, and print the version it pushed.

The archive is a zip of exactly what a local run would read, byte for byte the same for the same
folder, so its sha256 names it: the server is first asked to train on a stored archive of that sha256
and sent the bytes only when it has none. Ctrl-C stops the training on the server (DELETE).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tandem.cli.output import console, err_console
from tandem.errors import ClusterError, ConfigError, InvalidRequest, ServerUnreachable, TandemError
from tandem.protocol.training import SSE, TrainingSpec, sse_events

RECONNECTS = 5
READ_TIMEOUT_S = 120.0  # the server sends a keepalive every 15 s while a job is quiet


def _error(r: httpx.Response) -> TandemError:
    from tandem.protocol.status import error_for, error_message, retry_after

    message = error_message(r.content) or r.text[:500]
    return error_for(r.status_code, f"the training service answered {r.status_code}: {message}",
                     retry_after(r.headers.get("retry-after")))


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


class RemoteTraining:
    """One training on a remote service, from packing to the pushed version."""

    def __init__(self, url: str, key: str | None, show: bool, verbose: bool) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--remote {url!r} is not a URL: give the training service's address, e.g. "
                              "http://trainer:8000")
        self.url = url.rstrip("/")
        self.headers = {"authorization": f"Bearer {key}"} if key else {}
        self.show, self.verbose = show, verbose
        self.client = httpx.Client(base_url=self.url, headers=self.headers,
                                   timeout=httpx.Timeout(60.0, read=READ_TIMEOUT_S))
        self.seconds: dict[str, float] = {}

    def close(self) -> None:
        self.client.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self.client.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ServerUnreachable(f"the training service at {self.url} does not answer ({type(e).__name__}: "
                                    f"{e})") from e

    def submit(self, data: Path, spec: TrainingSpec) -> dict[str, Any]:
        """Pack ``data``, hand it over with ``spec`` (by reference when the service has it), return the training."""
        from tandem.data.archive import pack_dataset

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="tandem-remote-") as tmp:
            archive = Path(tmp) / "dataset.zip"
            with console.status("packing the class folders…", spinner="dots"):
                summary = pack_dataset(data, archive)
                with archive.open("rb") as f:
                    sha = hashlib.file_digest(f, "sha256").hexdigest()
            self.seconds["pack"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            self.submitted_at = t1
            r = self._request("POST", "/v1/trainings", json={"dataset": sha, **spec.to_json()})
            if r.status_code == 404 and "no dataset" in r.text:
                size = archive.stat().st_size
                with console.status(f"uploading {summary.images} photos in {len(summary.classes)} classes "
                                    f"({size / 1e6:.1f} MB)…", spinner="dots"):
                    params = {k: str(v) for k, v in spec.to_json().items() if v is not None}
                    r = self._request("POST", "/v1/trainings", params=params, content=_chunks(archive),
                                      headers={"content-type": "application/zip", "content-length": str(size)},
                                      timeout=httpx.Timeout(60.0, read=None, write=None))
            if r.status_code != 202:
                raise _error(r)
            self.seconds["submit"] = time.perf_counter() - t1
        training: dict[str, Any] = r.json()
        return training

    def follow(self, training_id: str) -> dict[str, Any]:
        """Follow the training's events to its end with the progress bar; the ``end`` event's summary."""
        from tandem.training.progress import TrainProgress

        bar: TrainProgress | None = None
        last_id: str | None = None
        end: dict[str, Any] | None = None
        attempts = 0
        try:
            while end is None:
                headers = {"accept": SSE, **({"last-event-id": last_id} if last_id else {})}
                try:
                    with self.client.stream("GET", f"/v1/trainings/{training_id}", headers=headers) as r:
                        if r.status_code != 200:
                            r.read()
                            raise _error(r)
                        for kind, data, event_id in sse_events(r.iter_lines()):
                            last_id = event_id or last_id
                            attempts = 0
                            bar = self._on(kind, data, bar)
                            if kind == "end":
                                end = data
                                break
                except (httpx.TransportError, httpx.StreamError) as e:
                    attempts += 1
                    if attempts > RECONNECTS:
                        raise ServerUnreachable(f"lost the training service at {self.url} ({type(e).__name__}); the "
                                                f"training goes on there: GET /v1/trainings/{training_id}") from e
                    time.sleep(min(10.0, 2.0**attempts))
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        return end

    def _on(self, kind: str, data: dict[str, Any], bar: Any) -> Any:
        from tandem.training.progress import TrainProgress

        if kind == "status" and self.show and bar is None and data.get("status") in ("PENDING", "RUNNING"):
            console.print("queued on the Ray cluster…" if data["status"] == "PENDING" else "running on the Ray cluster…",
                          highlight=False)
        elif kind == "dataset" and self.show:
            console.print(f"training on {data.get('images')} photos in {data.get('classes')} classes", highlight=False)
        elif kind == "start" and bar is None:
            bar = TrainProgress(int(data["epochs"]), int(data["steps_per_epoch"]), int(data.get("start_epoch", 0)),
                                enabled=self.show)
            bar.__enter__()
        elif kind == "step" and bar is not None:
            bar.step(int(data["epoch"]), int(data["batch"]), _num(data.get("loss")), _num(data.get("acc")))
        elif kind == "epoch" and bar is not None:
            if "first_epoch" not in self.seconds:
                self.seconds["first_epoch"] = time.perf_counter() - self.submitted_at
            row = {k: math.nan if v is None else v for k, v in data.get("row", {}).items()}  # JSON's null: NaN
            bar.epoch_done(int(data["epoch"]), row)
        elif kind in ("exporting", "pushing"):
            if bar is not None:
                bar.__exit__(None, None, None)
                bar = None
            if self.show:
                console.print(f"{kind} on the training service…", highlight=False)
        elif kind == "log" and self.verbose:
            err_console.print(data.get("line", ""), highlight=False, markup=False)
        return bar

    def stop(self, training_id: str) -> None:
        r = self._request("DELETE", f"/v1/trainings/{training_id}")
        if r.status_code not in (202, 409):
            raise _error(r)


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def train_remote(url: str, key: str | None, data: str, spec: TrainingSpec, show: bool, verbose: bool) -> dict[str, Any]:
    """Submit, follow and report one remote training; the summary `--json` prints. Ctrl-C stops it there."""
    folder = Path(data)
    if data == "lfw" or not folder.is_dir():
        raise ConfigError(f"--remote trains on a folder of class sub-folders you give with --data, not {data!r}: "
                          "the photos are packed and uploaded (for LFW, pass its person folders you want)")
    t0 = time.perf_counter()
    remote = RemoteTraining(url, key, show, verbose)
    try:
        training = remote.submit(folder, spec)
        training_id = training["id"]
        if show:
            summary = training.get("summary") or {}
            console.print(f"submitted training [bold]{training_id}[/] ({summary.get('images')} photos in "
                          f"{summary.get('classes')} classes, dataset {training['dataset'][:12]}…)")
        try:
            end = remote.follow(training_id)
        except KeyboardInterrupt:
            remote.stop(training_id)
            err_console.print(f"stopped training {training_id} on {url}: nothing was pushed", highlight=False)
            raise
    finally:
        remote.close()
    status = end.get("status")
    if status != "SUCCEEDED" or end.get("version") is None:
        why = end.get("error") or f"the training ended {status}"
        raise ClusterError(f"training {training_id} failed: {why}")
    seconds = {k: round(v, 2) for k, v in remote.seconds.items()}
    seconds["total"] = round(time.perf_counter() - t0, 2)
    scores = [v for row in end.get("epochs", []) if isinstance(v := row.get("val_acc"), int | float) and math.isfinite(v)]
    return {"training": training_id, "name": end.get("name"), "version": end.get("version"),
            "alias": end.get("alias"), "status": status, "epochs": len(end.get("epochs", [])),
            "best_val_top1": max(scores) if scores else None, "dataset": training["dataset"], "seconds": seconds}


def check_spec(spec: TrainingSpec) -> TrainingSpec:
    """The spec's shape and the model name, before anything is packed (the service checks the alias too,
    before it reads any upload)."""
    from tandem.bundle import NAME_RE

    spec.check()
    if not NAME_RE.fullmatch(spec.name):
        raise InvalidRequest(f"--name {spec.name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    return spec
