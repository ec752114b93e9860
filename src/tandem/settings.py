"""Every setting Tandem reads, in one typed place (environment variables prefixed ``TANDEM_``).

``Settings`` reads them all; each area has its own part — ``ServerSettings``, ``RegistrySettings``,
``OtaSettings``, ``RaySettings`` — which the composition roots (the CLI, ``create_app``) take from it
(``settings.server`` and so on) and pass to the code of that area, which sees no other setting.
``Settings`` is each of them too (it inherits their fields), so a root may pass it whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.errors import ConfigError

P = TypeVar("P", bound=BaseModel)

class ServerSettings(BaseModel):
    """The server's: batching, limits, the edge, photos, keys, the browser app, the model pool."""

    ort_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose (one per core).",
    )

    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db shared by several workers/servers for rate limits; unset: in-process.",
    )
    max_batch_size: int = Field(default=8, ge=1, le=1024, description="Dynamic batching: most requests per ONNX run.")
    batches_in_flight: int = Field(
        default=0, ge=0, le=64,
        description="Dynamic batching: model calls running at once per model; 0 = cores // (workers × ORT threads).",
    )
    max_delay_ms: float = Field(
        default=2.0, ge=0, le=1000, description="Dynamic batching: longest wait for more requests once one arrived."
    )
    lone_request_threads: int = Field(
        default=0, ge=0, le=256,
        description="ONNX Runtime threads for a lone request (its model otherwise idle: nothing queued, received "
        "or running): 0 = every core this worker may use (cores // workers); 1 = none apart, lone requests run "
        "like the others.",
    )
    request_timeout_s: float = Field(default=30.0, gt=0, description="A request still unanswered after this gets 504.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    # Above what one server answers (about 425/s on 2 cores, bench/results/serving.json): the default
    # never refuses a key the server could still serve.
    rate_limit_per_s: float = Field(default=1000.0, gt=0, description="Token-bucket refill per API key (requests/s).")
    rate_limit_burst: int = Field(default=2000, ge=1, description="Token-bucket capacity per API key.")
    # Every install of an app shares the device key it ships with: its bucket is the whole fleet's.
    device_rate_limit_per_s: float = Field(
        default=5000.0, gt=0,
        description="Token-bucket refill for device-scope API keys (the fleet's shared key: its enrolments, and "
        "its OTA calls while TANDEM_OTA_SHARED_KEY_UPDATES is on).",
    )
    device_rate_limit_burst: int = Field(default=10000, ge=1, description="Token-bucket capacity for device-scope keys.")
    per_device_rate_limit_per_s: float = Field(
        default=2.0, gt=0, description="Token-bucket refill for each registered device's own credential (requests/s)."
    )
    per_device_rate_limit_burst: int = Field(
        default=60, ge=1, description="Token-bucket capacity for each registered device (an update is ~10 requests)."
    )
    device_enrol_per_s: float = Field(
        default=20.0, gt=0,
        description="Registrations (POST /v1/devices) each device-scope key may make per second once its burst is "
        "spent: the shared key ships in every app, so whoever unpacks one can make devices at this rate at most.",
    )
    device_enrol_burst: int = Field(default=1000, ge=1, description="Registrations a device-scope key may make at once.")
    # --- the edge: what one client may hold of a server worker (docs/serving.md, "Limits") -------
    max_in_flight: int = Field(
        default=128, ge=1, le=100_000,
        description="Requests a server worker handles at once (from the first header to the last byte of the "
        "answer, downloads included); more get 503 with Retry-After at once. 128: four times the concurrency at "
        "which a 2-core machine reaches its capacity (bench/soak ramps to 32); health checks are not counted.",
    )
    max_in_flight_per_client: int = Field(
        default=0, ge=0, le=100_000,
        description="Of those, requests one client address may have in flight (0: half of TANDEM_MAX_IN_FLIGHT): "
        "one client's slow requests cannot take every slot. Behind a proxy, set TANDEM_TRUSTED_PROXIES, or every "
        "client shares the proxy's address and its share.",
    )
    # --- steady tails under load (docs/serving.md, "Limits") ---------------------------------------
    max_in_flight_ota: int = Field(
        default=0, ge=0, le=100_000,
        description="Of TANDEM_MAX_IN_FLIGHT, the slots of device traffic (/v1/ota/..., /v1/devices): at most "
        "this many such requests in flight, and the other requests (inference, the rest) at most the remainder, "
        "so a burst of downloads (each holds its slot while it streams) cannot starve inference, nor inference "
        "the fleet's updates. 0: a quarter of TANDEM_MAX_IN_FLIGHT (at least 1); at most TANDEM_MAX_IN_FLIGHT - 1 "
        "(the other requests keep a slot; with TANDEM_MAX_IN_FLIGHT=1 both kinds share the one).",
    )
    max_queue_ms: float = Field(
        default=100.0, ge=0, le=600_000,
        description="The most a request may wait in its model's queue (after its body was read, before its model "
        "call): one that waited longer is answered 503 with Retry-After instead of being run late, and a new "
        "one is refused at once when the queue ahead of it (rows / the model's measured rows per second) would "
        "take longer. Never less than two of the model's own call times (a slow model is not refused for the "
        "call in progress). 100 ms: ten or more full batches of a small model on 2 cores, and half the soak's "
        "first-minute p99, so a request let through still ends near it. 0: no limit (only the request timeout).",
    )
    max_connections: int = Field(
        default=4096, ge=16, le=1_000_000,
        description="Open connections a server worker keeps (also capped by its file-descriptor limit, less "
        "64). At the cap, a new connection closes the oldest one that is not in the middle of a request (idle "
        "keep-alives, clients still sending headers): held sockets cannot lock others out.",
    )
    header_timeout_s: float = Field(
        default=5.0, gt=0, le=300,
        description="A connection must send a request's complete headers within this many seconds of opening (or "
        "of its previous answer); else it is closed (408 if it had sent part of a request). Slowloris defence.",
    )
    keep_alive_s: int = Field(
        default=5, ge=1, le=3600, description="An idle keep-alive connection is closed after this many seconds."
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks (127.0.0.1, 10.0.0.0/8, ::1) of the reverse proxies in "
        "front of the server. Only from these is the forwarding header (TANDEM_FORWARDED_HEADER) believed, and "
        "the client is the rightmost address in it that is not one of them. Empty (default): no header is "
        "believed; the client is the connection's peer.",
    )
    forwarded_header: str = Field(
        default="x-forwarded-for", pattern=r"^(x-forwarded-for|forwarded)$",
        description="The header the trusted proxies set: x-forwarded-for, or forwarded (RFC 7239, its for= "
        "parameters). Only that one is read: the client may send the other.",
    )
    # --- photos (the image endpoint) -------------------------------------------------------------
    decode_max_pixels: int = Field(
        default=16_000_000, ge=10_000, le=40_000_000,
        description="No photo is decoded to more pixels than this. A larger JPEG is decoded at 1/2, 1/4 or 1/8 "
        "scale (its DCT, cheaply) to fit; another format is refused (400). JPEGs are decoded reduced anyway "
        "down to what the model can use (64 times its input's pixels, at least 2 MP).",
    )
    decode_max_bytes: int = Field(
        default=128 * 1024 * 1024, ge=1024 * 1024, le=4 * 1024**3,
        description="Memory one decode may take, from the header (width x height x the format's bytes per pixel, "
        "plus the RGB copy): 16-bit and huge-canvas PNGs above it are refused (400) before decoding.",
    )
    decode_threads: int = Field(
        default=0, ge=0, le=256, description="Photos a server worker decodes at once; 0: cores // workers (at least 1)."
    )
    decode_queue: int = Field(
        default=32, ge=0, le=10_000,
        description="Photos that may wait for a decoding thread; more get 503 with Retry-After at once.",
    )
    alias_poll_s: float = Field(
        default=0.5, gt=0, le=60, description="How often each server worker looks for moved aliases in the registry."
    )
    workers: int = Field(
        default=1, ge=1, le=64,
        description="Server worker processes (`tandem serve --workers` sets it); each runs cores // workers "
        "model calls at once unless TANDEM_BATCHES_IN_FLIGHT is set.",
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve /metrics without an API key. Off: /metrics needs an admin key, because the server may "
        "listen on a public address and the metrics name every model and its traffic. Turn on where /metrics is "
        "reachable only from a private network (a Prometheus sidecar or an internal port).",
    )
    key_cache_s: float = Field(
        default=5.0, ge=0, le=300,
        description="How long a worker trusts an API key check before asking the registry again; a revoked key "
        "stops working within this time. 0: ask on every request.",
    )
    # Generous, because a whole NAT (an office, a carrier's) shares one address: what matters is that
    # guessing stays slow and the registry is not flooded with lookups, not the exact number.
    auth_failures_per_s: float = Field(
        default=2.0, gt=0,
        description="Brute-force guard: failed API-key checks each client address may make per second, once its "
        "burst is spent; past that it gets 429 without its key being looked at.",
    )
    auth_failures_burst: int = Field(
        default=60, ge=1, description="Brute-force guard: failed API-key checks a client address may make at once."
    )
    web_dir: Path | None = Field(
        default=None,
        description="The built browser app served at /app/ (web/, built by `make install` into src/tandem/webapp); "
        "None: the one inside the installed package.",
    )
    preload: bool = Field(
        default=True, description="Load and warm up the default version of every registered model at start-up."
    )
    warmup_runs: int = Field(default=3, ge=0, le=100, description="Dummy runs per batch size before a version serves.")
    model_idle_s: float = Field(
        default=0, ge=0,
        description="Unload versions no alias points to after this many idle seconds (0: keep them loaded).",
    )
    max_loaded_versions: int = Field(
        default=4, ge=1, le=1000,
        description="Versions of one model a worker holds at most: loading another unloads the least recently "
        "used one no alias points to (a request naming old versions one by one cannot fill the memory).",
    )
    access_log: bool = Field(default=True, description="One JSON line per request on stderr (never the API key).")
    access_log_flush_ms: float = Field(
        default=50, ge=0, le=60_000,
        description="Access lines are written together once this many milliseconds have passed since the first "
        "of them (and at shutdown): a write a line cost the event loop a sixth of its CPU. 0: each line at once.",
    )
    # --- managed training (POST /v1/trainings, docs/scale.md) -------------------------------------
    training_max_dataset_bytes: int = Field(
        default=4 << 30, ge=1024, le=1 << 40,
        description="Managed training: the most bytes a dataset archive may be uploaded as, and unpack to "
        "(larger: 413 or 400 before anything is stored).",
    )
    training_max_dataset_entries: int = Field(
        default=200_000, ge=10, le=10_000_000,
        description="Managed training: the most entries (photos and folders) a dataset archive may hold.",
    )
    training_upload_timeout_s: float = Field(
        default=3600.0, gt=0, le=86_400,
        description="Managed training: how long an upload (reading, checking and storing the archive, submitting "
        "the job) may take, in place of TANDEM_REQUEST_TIMEOUT_S.",
    )

    def rate_for(self, scope: str, registered_device: bool = False) -> tuple[float, int]:
        """(requests/s, burst) of the token bucket for a key of this scope, or for one registered device."""
        if registered_device:
            return self.per_device_rate_limit_per_s, self.per_device_rate_limit_burst
        if scope == "device":
            return self.device_rate_limit_per_s, self.device_rate_limit_burst
        return self.rate_limit_per_s, self.rate_limit_burst

    def proxies(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]


class RegistrySettings(BaseModel):
    """Where the registry lives: its folder (artifacts, keys) and its database."""

    home: Path = Field(
        default=Path.home() / ".tandem",
        description="Tandem's own writable folder: caches, default run and bundle locations.",
    )
    # A secret: the URL may hold the database's password; reprs and logs show it masked.
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the registry database (e.g. postgresql+psycopg://127.0.0.1:5432/test). "
        "Unset: a SQLite file, registry.db, under the Tandem home (WAL mode).",
    )
    artifacts: str | None = Field(
        default=None,
        description="Where bundle files and OTA objects are stored, by sha256: s3://BUCKET/PREFIX for S3-compatible "
        "object storage (AWS S3, MinIO, Ceph RGW, Cloudflare R2, GCS's S3 API; servers on several machines share "
        "it), or an absolute folder. Unset: objects/ under the Tandem home. docs/registry.md, 'Object storage'.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="The S3 API's URL when it is not AWS: http://127.0.0.1:9000 (MinIO), "
        "https://ACCOUNT.r2.cloudflarestorage.com (R2), https://storage.googleapis.com (GCS). Unset: AWS_ENDPOINT_URL, "
        "else AWS S3 itself.",
    )
    s3_region: str | None = Field(
        default=None, description="The bucket's region (R2: auto). Unset: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1."
    )
    s3_access_key_id: str | None = Field(
        default=None,
        description="S3 access key, with TANDEM_S3_SECRET_ACCESS_KEY. Unset: AWS's own chain (AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, web identity on EKS, ECS task role, EC2 instance role).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="The secret of TANDEM_S3_ACCESS_KEY_ID (shown masked)."
    )

    @property
    def registry_url(self) -> str:
        """The database URL in clear, password included: for making the engine, never for showing."""
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.home / 'registry.db'}"

    @property
    def registry_location(self) -> str:
        """The database URL as shown to people: without the user and password."""
        return self.registry_url.split("@")[-1]


class OtaSettings(BaseModel):
    """Over-the-air delivery (docs/ota.md)."""

    ota_master_key: SecretStr | None = Field(
        default=None,
        description="base64 of 32 random bytes that wrap (AES-256-GCM) the OTA signing keys and data keys stored "
        "in the registry. Unset: the key file ota-master.key under the Tandem home, created on first use (mode "
        "0600). Every server and CLI of one registry must use the same key: set it when they run on several hosts.",
    )
    ota_report_flush_s: float = Field(
        default=1.0, gt=0, le=60,
        description="How often a server worker writes the device health reports it added up to the registry "
        "(and checks the health gate); what is left is written at shutdown.",
    )
    ota_shared_key_updates: bool = Field(
        default=False,
        description="Transition for apps released before device registration: the fleet's shared device key may "
        "still check, fetch data keys and download, naming its own device_id (which then decides its rollout "
        "bucket, as before). Its health reports are refused either way. Off: only registered devices get updates.",
    )
    ota_payload_ttl_s: float = Field(
        default=3600.0, ge=60, le=7 * 86_400,
        description="Payload schema 2: how long a signed check answer stays valid (its expires_at); a device "
        "refuses an older one, so a captured answer cannot be replayed to it later.",
    )
    ota_gate_min_devices: int = Field(
        default=20, ge=1, le=10**9,
        description="Health gate: distinct devices that must have reported on a release before its failure rate "
        "is judged; the default for releases made without --min-devices (stored with the release).",
    )
    ota_report_interval_s: float = Field(
        default=60.0, gt=0, le=86_400,
        description="Health reports: one counted per device and model per this many seconds (shared through "
        "Redis with TANDEM_REDIS_URL, else per worker); more get 429 with Retry-After.",
    )
    ota_downloads: Literal["server", "presigned", "cdn"] = Field(
        default="server",
        description="Where signed check answers send devices for the bytes (docs/ota.md, 'Downloads from storage "
        "or a CDN'): server (this server's download routes only); presigned (short-lived presigned URLs of the "
        "S3 bucket TANDEM_ARTIFACTS names); cdn (TANDEM_OTA_DOWNLOAD_BASE, serving what the server publishes to "
        "TANDEM_OTA_PUBLISH). Either way each file also names the server's own route, which devices fall back to.",
    )
    ota_presign_s: float = Field(
        default=900.0, ge=1, le=7 * 86_400,
        description="presigned: how long a presigned download URL stays valid (S3 allows at most 7 days). Each "
        "worker reuses a URL while at least half of this remains, so an answer never hands out one about to expire.",
    )
    ota_download_base: str | None = Field(
        default=None,
        description="cdn: the CDN's base URL (https://cdn.example.com/tandem); an object is at BASE/ab/cdef... "
        "(its sha256, split after two digits), as laid out in TANDEM_OTA_PUBLISH, the CDN's origin.",
    )
    ota_publish: str | None = Field(
        default=None,
        description="cdn: where the server copies what devices download (manifests, encrypted model files and "
        "patches; never a plaintext model file), for the CDN to serve: s3://BUCKET/PREFIX (with the endpoint and "
        "credentials of TANDEM_ARTIFACTS) or an absolute folder. Must not be TANDEM_ARTIFACTS itself, which holds "
        "the bundles' plaintext files.",
    )


class RaySettings(BaseModel):
    """Ray: past one machine (`tandem train --workers`, `tandem serve --ray`; docs/scale.md)."""

    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster to run on (ray://host:10001, or auto for the one `ray start` runs here); "
        "--address overrides it. Unset: Tandem starts a local Ray instance sized to this machine and stops it after.",
    )
    ray_temp_dir: Path = Field(
        default=Path("/tmp/tandem-ray"),
        description="Session files and logs of the local Ray instance Tandem starts. Short on purpose: Ray puts "
        "Unix sockets in it, and their paths may not exceed 107 bytes.",
    )
    ray_cpus_per_worker: float = Field(
        default=0, ge=0,
        description="CPUs each Ray Train worker reserves, and so its torch threads; 0: the cluster's CPUs "
        "divided by --workers.",
    )
    ray_sync_batchnorm: bool = Field(
        default=True,
        description="With several Ray Train workers, BatchNorm statistics over the whole global batch, so N "
        "workers train as one worker does (training/sync.py). Off: each worker's BatchNorm sees only its "
        "shard, which is faster on CPUs but trains differently, worse with small batches.",
    )
    ray_max_failures: int = Field(
        default=1, ge=0, le=100,
        description="How often Ray Train restarts a worker group that lost a worker, from its last checkpoint, "
        "before the run fails.",
    )
    ray_replica_cpus: float = Field(
        default=1.0, ge=0,
        description="CPUs each Ray Serve replica reserves (0: replicas are placed without regard to CPUs).",
    )
    ray_haproxy: bool = Field(
        default=True,
        description="For the Ray instance `tandem serve --ray` starts itself: Ray Serve's HAProxy ingress "
        "(RAY_SERVE_ENABLE_HA_PROXY, RAY_SERVE_THROUGHPUT_OPTIMIZED) - HAProxy in front of replicas that answer "
        "HTTP themselves - instead of Ray's Python proxy, which measured here cost 4 ms of CPU per request and "
        "a quarter of the throughput. On a cluster of your own, set those at `ray start`.",
    )
    ray_jobs_address: str | None = Field(
        default=None,
        description="Managed training (POST /v1/trainings): the Ray cluster's job submission API, its dashboard's "
        "address (http://head:8265), to which `tandem serve` submits each training as a Ray Job. Unset: managed "
        "training is off (503).",
    )
    ray_jobs_token: SecretStr | None = Field(
        default=None,
        description="Managed training: the Ray cluster's authentication token (Ray's token auth: `ray get-auth-token` "
        "on the head), sent to its job API as 'Authorization: Bearer TOKEN'. Unset: Ray's own (RAY_AUTH_MODE=token "
        "with RAY_AUTH_TOKEN or ~/.ray/auth_token), else none.",
    )
    ray_jobs_python: str = Field(
        default="python", min_length=1, max_length=1000,
        description="Managed training: the Python, on the Ray cluster's nodes, that has Tandem installed and runs "
        "a training job (`PYTHON -m tandem run-training-job ...`); a name on the nodes' PATH or an absolute path.",
    )
    ray_max_ongoing_requests: int = Field(
        default=64, ge=1, le=10_000,
        description="Requests a Ray Serve replica takes at once (Ray's default, 5, would starve Tandem's "
        "dynamic batching); more wait in Ray Serve's proxy.",
    )
    ray_max_replicas_per_node: int = Field(
        default=0, ge=0, le=100,
        description="Most Ray Serve replicas on one node (Ray's max_replicas_per_node): 1 puts each replica on a "
        "node of its own, so losing a node loses one replica. 0: no limit (Ray Serve spreads replicas anyway where "
        "it can; the CPUs each reserves, TANDEM_RAY_REPLICA_CPUS, decide how many fit a node).",
    )
    ray_proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        default="EveryNode",
        description="Where Ray Serve runs its HTTP ingress (HAProxy, or Ray's proxy) when `tandem serve --ray` "
        "starts Serve on a cluster: EveryNode (a load balancer in front of the nodes), or HeadOnly (one ingress, on "
        "the head; also where several nodes share one machine's ports, as in the tests).",
    )
    ray_storage: str | None = Field(
        default=None,
        description="`tandem train --workers` on a cluster: where Ray Train keeps a run's checkpoints while it runs, "
        "reachable from every node: s3://BUCKET/PREFIX (with the endpoint and credentials of TANDEM_ARTIFACTS: "
        "TANDEM_S3_*), or a folder every node mounts. Unset: <out>/ray, so --out must then be on storage every "
        "node sees. Each run takes a folder of its own below it, removed when the run ends.",
    )


class Settings(BaseSettings, ServerSettings, RegistrySettings, OtaSettings, RaySettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="ignore")

    data_home: Path | None = Field(
        default=None,
        description="Folder that holds lfw_home/ (scikit-learn's layout). Read only; never written.",
    )
    litert_python: Path | None = Field(
        default=None,
        description="`tandem export --formats litert`: the Python of the venv that holds LiteRT's converter "
        "(litert-torch); unset: .venv-litert beside Tandem's own venv, where `make install` puts it.",
    )
    @property
    def server(self) -> ServerSettings:
        return _part(ServerSettings, self)

    @property
    def registry(self) -> RegistrySettings:
        return _part(RegistrySettings, self)

    @property
    def ota(self) -> OtaSettings:
        return _part(OtaSettings, self)

    @property
    def ray(self) -> RaySettings:
        return _part(RaySettings, self)

    def require_data_home(self) -> Path:
        return require_data_home(self.data_home)


def require_data_home(data_home: Path | None) -> Path:
    """``data_home`` (TANDEM_DATA_HOME, given by the caller), checked to hold lfw_home/."""
    if data_home is None:
        raise ConfigError(
            "No LFW location set: set TANDEM_DATA_HOME to the folder that holds lfw_home/ "
            "(in this repository: ../shared/datasets), or pass --data DIR with your own images."
        )
    lfw = data_home / "lfw_home"
    if not lfw.is_dir():
        raise ConfigError(
            f"TANDEM_DATA_HOME={data_home} has no lfw_home/ folder: point it at the folder "
            "that holds lfw_home/lfw_funneled/<Person>/*.jpg."
        )
    return data_home


def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        raise ConfigError(f"invalid TANDEM_* environment setting:\n{e}") from e



def _part(cls: type[P], settings: Settings) -> P:
    """The area's fields of ``settings``, already validated: copied, not checked again."""
    return cls.model_construct(**{name: getattr(settings, name) for name in cls.model_fields})
