"""Ray Jobs for managed training (POST /v1/trainings): submit a job to a Ray cluster, read its status
and log, stop it, through Ray's job submission API (``ray.job_submission.JobSubmissionClient``, the
dashboard's ``/api/jobs/``).

Why Ray Jobs and not a thread or a subprocess of the server: the job runs on the cluster (a GPU node,
say), under Ray's scheduler and resource accounting, outlives a restart of the server that submitted
it, and is stopped, listed and logged by Ray like any job. Why the HTTP client and not ``ray.init``:
the server needs no driver connection to the cluster (no Ray processes of its own, no version-locked
GCS client), only the dashboard's address, and every server worker may follow or stop any job.

The client is synchronous (``requests``, no timeouts of its own) apart from ``tail_job_logs`` (a
websocket): callers in an event loop run the other methods in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tandem.errors import ClusterError, Unavailable


@dataclass(frozen=True)
class JobState:
    """What Ray says of one job."""

    job_id: str
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    start_ms: int | None = None
    end_ms: int | None = None


def _unreachable(address: str, e: BaseException) -> Unavailable:
    return Unavailable(f"Ray's job API at {address} does not answer ({type(e).__name__}): is the cluster up and "
                       "TANDEM_RAY_JOBS_ADDRESS its dashboard's address (http://HEAD:8265)?", retry_after=5.0)


def _refused(address: str) -> ClusterError:
    return ClusterError(f"Ray's job API at {address} refused Tandem's credentials: set TANDEM_RAY_JOBS_TOKEN to the "
                        "cluster's authentication token (`ray get-auth-token` on its head)")


class RayJobs:
    """One cluster's job API, connected on first use (the version check is a request)."""

    def __init__(self, address: str, token: str | None = None) -> None:
        """``token``: the cluster's authentication token (Ray's token auth); None: Ray's own settings decide."""
        self.address = address.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client: Any = None
        self._lock = threading.Lock()

    def _connected(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from ray.job_submission import JobSubmissionClient
                except ModuleNotFoundError as e:
                    raise ClusterError(f"managed training needs the ray extras ({e.name} is not installed): "
                                       "pip install 'tandem[ray]'") from e
                from ray.exceptions import AuthenticationError

                # "WebSocket closed for job …" at the end of every followed job: not the server log's business.
                logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
                try:
                    self._client = JobSubmissionClient(self.address, headers=self._headers)
                except (ConnectionError, OSError) as e:
                    raise _unreachable(self.address, e) from e
                except AuthenticationError as e:
                    raise _refused(self.address) from e
                except RuntimeError as e:
                    raise ClusterError(f"Ray's job API at {self.address} refused the connection: {e}") from e
            return self._client

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from ray.exceptions import AuthenticationError

        client = self._connected()
        try:
            return getattr(client, method)(*args, **kwargs)
        except (ConnectionError, OSError) as e:
            raise _unreachable(self.address, e) from e
        except AuthenticationError as e:
            raise _refused(self.address) from e

    def submit(self, job_id: str, entrypoint: str, env: Mapping[str, str], metadata: Mapping[str, str],
               cpus: float, gpus: float) -> None:
        """Submit ``entrypoint`` (a shell command run on the cluster) as the job ``job_id``, with ``env`` added
        to its environment and ``cpus``/``gpus`` reserved for the entrypoint process itself."""
        try:
            self._call("submit_job", entrypoint=entrypoint, submission_id=job_id,
                       runtime_env={"env_vars": dict(env)}, metadata=dict(metadata),
                       entrypoint_num_cpus=cpus, entrypoint_num_gpus=gpus)
        except RuntimeError as e:
            raise ClusterError(f"Ray did not take the training job: {e}") from e

    def state(self, job_id: str) -> JobState | None:
        """The job's state; None when the cluster has no such job."""
        try:
            info = self._call("get_job_info", job_id)
        except RuntimeError as e:
            if "status code 404" in str(e) or "does not exist" in str(e):
                return None
            raise ClusterError(f"Ray's job API failed: {e}") from e
        return JobState(job_id, str(getattr(info.status, "value", info.status)), info.message or "",
                        dict(info.metadata or {}), info.start_time, info.end_time)

    def logs(self, job_id: str) -> str:
        """Everything the job has written so far (stdout and stderr of its entrypoint)."""
        try:
            return str(self._call("get_job_logs", job_id))
        except RuntimeError as e:
            raise ClusterError(f"Ray's job API failed to give the job's log: {e}") from e

    def stop(self, job_id: str) -> bool:
        """Ask Ray to stop the job (SIGTERM to its entrypoint, SIGKILL a few seconds later); whether it was running."""
        try:
            return bool(self._call("stop_job", job_id))
        except RuntimeError as e:
            raise ClusterError(f"Ray could not stop the job: {e}") from e

    async def tail(self, job_id: str) -> AsyncIterator[str]:
        """The job's log as it grows, from its first byte, in chunks of lines; ends once the job has ended and
        its log is read to the end."""
        client = await asyncio.to_thread(self._connected)
        try:
            async for chunk in client.tail_job_logs(job_id):
                yield chunk
        except (ConnectionError, OSError) as e:
            raise _unreachable(self.address, e) from e
        except RuntimeError as e:
            raise ClusterError(f"Ray's job API stopped sending the job's log: {e}") from e
