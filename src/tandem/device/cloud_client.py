"""The cloud side of the device SDK: a client for any Open Inference Protocol v2 or TF-Serving endpoint.

Written to the specs, not to Tandem's server, so the same client talks to Tandem, Triton, KServe or a
hosted service. The protocol is a strategy object (tandem.device.wire), as httpx takes a transport:

- ``OipV2()``: OIP v2 (KServe v2) REST, ``POST /v2/models/{name}[/versions/{v}]/infer``, with the
  binary tensor data extension by default (a JSON header of ``Inference-Header-Content-Length``
  bytes, then the raw little-endian tensor bytes) or plain JSON tensors (``OipV2(binary=False)``);
  https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
- ``TfServing()``: TF-Serving REST, ``POST /v1/models/{name}[/versions/{n}|/labels/{alias}]:predict``
  (columnar ``inputs``); https://www.tensorflow.org/tfx/serving/api_rest

The names ``protocol="oip"`` (with ``binary=``) and ``protocol="tfserving"`` are accepted too.

Failure handling, so that a dead server costs one timeout rather than one per call:

- connect and read timeouts (``connect_timeout_s``, ``timeout_s``);
- retries with exponential backoff and full jitter (delay = uniform(0, min(cap, base·2^attempt)))
  on idempotent calls only (metadata, health); an inference POST is retried only when the
  connection was refused, i.e. before any byte of the request was sent;
- a :class:`CircuitBreaker`: after ``failures`` consecutive failed calls it opens for
  ``cooldown_s`` and fails fast with :class:`CircuitOpen`; then one probe call is let through
  (half-open): success closes it, failure opens it again;
- a deadline on every call: ``infer(..., deadline=)``, else ``deadline_s`` (10 s by default) from
  the call's start, for ``metadata`` and ``ready`` too. Every request gets at most the time left,
  no retry starts past it, an answer is read no further than it, and the caller stops waiting when
  it passes even if the server is still trickling bytes (:class:`DeadlineExceeded`): httpx's
  timeouts bound each read, and a server sending a byte a second never trips them.

A server that refuses OIP's binary tensor data (400 or 415 to a binary request, before any binary
request to that model succeeded) is asked again in JSON, and that model's requests stay JSON on
this client: one extra request, once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
import numpy as np

from tandem.device import answers
from tandem.device.deadline import Deadline, DeadlineExceeded, within
from tandem.device.wire import WireProtocol, wire_protocol
from tandem.errors import AnswerTooLarge, InvalidRequest, ServerUnreachable, TandemError, Unavailable
from tandem.protocol import jsonbody, status

log = logging.getLogger(__name__)
T = TypeVar("T")

Clock = Callable[[], float]
# An answer is read no further than this (device/answers.py): outputs of a large batch fit, a flood does not.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# A timeout that fires this close to the deadline was the deadline's doing, not the client's own timeout.
_DEADLINE_SLACK_S = 0.01
# What a server that does not read OIP's binary tensor data answers a binary request.
_REFUSES_BINARY = (400, 415)


class CircuitOpen(ServerUnreachable):
    """The circuit breaker is open: the endpoint failed repeatedly and is not tried until the cool-down ends."""


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^attempt)) for retry number ``attempt`` (0-based)."""
    return rng() * min(cap_s, base_s * (2.0 ** attempt))


class CircuitBreaker:
    """Closed → (``failures`` consecutive failures) → open → (``cooldown_s``) → half-open: one probe.

    Thread-safe; ``clock`` is injectable so tests need not sleep.
    """

    def __init__(self, failures: int = 3, cooldown_s: float = 30.0, clock: Clock = time.monotonic) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        with self._lock:
            return self._state()

    def _state(self) -> Literal["closed", "open", "half_open"]:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() >= self.opened_at + self.cooldown_s else "open"

    def retry_in(self) -> float:
        """Seconds until the next call may go through (0 when closed or half-open)."""
        with self._lock:
            if self.opened_at is None:
                return 0.0
            return max(0.0, self.opened_at + self.cooldown_s - self.clock())

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time may."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "open" or self._probing:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            self.consecutive = 0
            self.opened_at = None
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self.consecutive += 1
            if self._probing or self.consecutive >= self.threshold:
                self.opened_at = self.clock()
            self._probing = False


class _Call:
    """One call under a deadline. Once the caller has stopped waiting (``abandoned``), the worker
    still running it leaves the breaker alone: the caller counted that failure already."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.abandoned = False
        self.lock = threading.Lock()


@dataclass
class CloudResult:
    outputs: dict[str, np.ndarray]
    model: str
    version: int | None
    network_s: float  # request out, answer back, including encoding, decoding and the remote inference
    sent_bytes: int = 0  # the request's body
    received_bytes: int = 0  # the answer's body


def _error_for(url: str, resp: httpx.Response) -> TandemError:
    """The server's refusal as the matching TandemError (tandem.protocol.status), with its message."""
    message = status.error_message(resp.content) or resp.text[:300] or resp.reason_phrase
    return status.error_for(resp.status_code, f"{url}: HTTP {resp.status_code}: {message}",
                            status.retry_after(resp.headers.get("retry-after")))


class CloudClient:
    """One model on one endpoint. ``version``: a number, an alias (Tandem; TF-Serving labels) or None.
    ``protocol``: ``OipV2()`` (the default), ``TfServing()`` or their names "oip" and "tfserving";
    ``binary`` goes with the name "oip" (default True), ``OipV2(binary=...)`` otherwise.
    ``connect_timeout_s``/``timeout_s``: httpx's, per connect and per read or write. ``deadline_s``:
    the most a call may take in all (connect, send, the whole answer, retries) when it is given no
    ``deadline``; None: no bound but the per-operation timeouts."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        version: int | str | None = None,
        api_key: str | None = None,
        protocol: str | WireProtocol = "oip",
        binary: bool | None = None,
        connect_timeout_s: float = 2.0,
        timeout_s: float = 10.0,
        deadline_s: float | None = 10.0,
        retries: int = 2,
        backoff_base_s: float = 0.05,
        backoff_cap_s: float = 2.0,
        breaker: CircuitBreaker | None = None,
        headers: dict[str, str] | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if deadline_s is not None and not deadline_s > 0:
            raise InvalidRequest(f"deadline_s={deadline_s!r}: a deadline must be a positive number of seconds, or None")
        self.protocol = wire_protocol(protocol, binary)
        self.deadline_s = deadline_s
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.breaker = breaker or CircuitBreaker()
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        self._sleep = sleep
        self._rng = rng
        all_headers = dict(headers or {})
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.url, headers=all_headers, transport=transport,
                                  timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))
        self._served: dict[str, int] = {}  # model status path → the version it serves (answers that name none)
        # model → the protocol its requests were answered in: binary known to work, or the JSON fallback
        self._wire: dict[str, WireProtocol] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------
    def _send(self, method: str, path: str, *, idempotent: bool, content: bytes | None = None,
              headers: dict[str, str] | None = None, call: _Call | None = None,
              passthrough: tuple[int, ...] = ()) -> httpx.Response:
        """The answer to one request, with retries; a refusal raised as its TandemError unless its
        status is in ``passthrough`` (returned, for the caller to handle)."""
        where = f"{self.url}{path}"
        if not self.breaker.allow():
            raise self._circuit_open()
        attempt = 0
        error: TandemError  # what stopped this attempt
        while True:
            try:
                request = self._http.build_request(method, path, content=content, headers=headers,
                                                   timeout=self._timeout(call))
                resp = answers.send(self._http, request, self.max_answer_bytes, where,
                                    call.deadline if call is not None else None)
            except AnswerTooLarge as e:  # a server that answers that much is not one to retry
                error, retry = e, False
            except httpx.ConnectError as e:  # refused or unresolvable: nothing was sent, safe to retry
                error = ServerUnreachable(f"{where}: cannot connect ({e}); no network or server down")
                retry = True
            except httpx.TimeoutException as e:
                if call is not None and call.deadline.remaining() < _DEADLINE_SLACK_S:
                    error = call.deadline.exceeded(where)  # the deadline, not the client's timeout, cut it short
                else:
                    error = ServerUnreachable(f"{where}: no answer within the timeout ({type(e).__name__}: {e})")
                retry = idempotent
            except httpx.TransportError as e:
                error = ServerUnreachable(f"{where}: connection failed ({type(e).__name__}: {e})")
                retry = idempotent
            except DeadlineExceeded:
                self._settle(call, ok=False)
                raise
            else:
                if resp.status_code < 500:
                    self._settle(call, ok=True)  # the server is alive, even if it refuses this request
                    if resp.status_code >= 400 and resp.status_code not in passthrough:
                        raise _error_for(where, resp)
                    return resp
                error = _error_for(where, resp)
                retry = idempotent and resp.status_code in (502, 503, 504)
            delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s, self._rng) if retry else 0.0
            if not retry or attempt >= self.retries or (call is not None and delay >= call.deadline.remaining()):
                self._settle(call, ok=False)
                raise error
            self._sleep(delay)
            attempt += 1

    def _circuit_open(self) -> CircuitOpen:
        wait = self.breaker.retry_in()
        return CircuitOpen(f"{self.url} failed {self.breaker.consecutive} time(s) in a row; not calling it again "
                           f"for {wait:.1f} s (circuit breaker open)", wait)

    def _timeout(self, call: _Call | None) -> httpx.Timeout:
        """The client's timeouts, each cut to the time left before the call's deadline."""
        if call is None:
            return self._http.timeout
        left = call.deadline.remaining()
        if left <= 0:
            raise call.deadline.exceeded(self.url)
        t = self._http.timeout
        return httpx.Timeout(connect=_cap(t.connect, left), read=_cap(t.read, left), write=_cap(t.write, left),
                             pool=_cap(t.pool, left))

    def _settle(self, call: _Call | None, ok: bool) -> None:
        if call is None:
            (self.breaker.success if ok else self.breaker.failure)()
            return
        with call.lock:
            if not call.abandoned:
                (self.breaker.success if ok else self.breaker.failure)()

    # --- idempotent calls ---------------------------------------------------------------------
    def ready(self) -> bool:
        """Whether the server says it is ready (OIP ``/v2/health/ready``; TF-Serving: the model's status)."""
        path = self.protocol.ready_path()
        try:
            if path is None:
                self.metadata()
            else:
                self._bounded(None, path, lambda call: self._send("GET", path, idempotent=True, call=call))
            return True
        except TandemError:
            return False

    def metadata(self, model: str | None = None, version: int | str | None = None, *,
                 deadline: Deadline | None = None) -> dict[str, Any]:
        """OIP model metadata (name, versions, inputs, outputs) or TF-Serving model status; of this
        client's model unless ``model`` (and ``version``) name another on the endpoint, e.g. a
        split's tail ``NAME.tail.K`` (NotFound when the server does not have it)."""
        path = self.protocol.model_path(model or self.model, version if model is not None else self.version)

        def get(call: _Call | None) -> dict[str, Any]:
            body = jsonbody.answer(self._send("GET", path, idempotent=True, call=call).content, f"{self.url}{path}")
            if not isinstance(body, dict):
                raise Unavailable(f"{self.url}{path}: expected a JSON object, got {type(body).__name__}")
            return body
        return self._bounded(deadline, path, get)

    def _default_deadline(self) -> Deadline | None:
        return Deadline.after(self.deadline_s, "deadline_s of the CloudClient") if self.deadline_s is not None else None

    def _bounded(self, deadline: Deadline | None, what: str, fn: Callable[[_Call | None], T]) -> T:
        """``fn(call)`` under ``deadline`` (else this client's ``deadline_s``): DeadlineExceeded once it
        passes, whatever the server does (tandem.device.deadline.within)."""
        deadline = deadline or self._default_deadline()
        if deadline is None:
            return fn(None)
        call = _Call(deadline)
        return within(deadline, lambda: fn(call), f"{self.url} ({what})", lambda: self._abandon(call))

    # --- inference ----------------------------------------------------------------------------
    def infer(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None, *,
              deadline: Deadline | None = None, model: str | None = None, version: int | str | None = None,
              input_parameters: dict[str, dict[str, Any]] | None = None) -> CloudResult:
        """Run the model on ``inputs`` (name → array with the batch first); all outputs unless named.
        ``deadline``: answer or raise DeadlineExceeded by then, whatever the server does.
        ``deadline``: answer or raise DeadlineExceeded by then, whatever the server does (None: this
        client's ``deadline_s`` from now).
        ``model``/``version``: another model or version on the same endpoint (a split's tail), sharing
        this client's connections and circuit breaker. ``input_parameters``: OIP parameters per input
        (e.g. an int8-encoded tensor's ``scale`` and ``zero_point``)."""
        if not inputs:
            raise InvalidRequest("infer needs at least one input tensor")
        if self.breaker.state == "open":  # fail fast: before encoding the request or starting a worker
            raise self._circuit_open()
        target = (model or self.model, version if version is not None or model is not None else self.version)
        if not self.protocol.addresses_other_models and (model is not None or input_parameters):
            raise InvalidRequest("another model's name and input parameters need an OIP v2 endpoint "
                                 "(split inference talks to NAME.tail.K over OIP)")
        start = time.perf_counter()
        result = self._bounded(deadline, target[0], lambda call: self._infer(inputs, outputs, call, target,
                                                                             input_parameters))
        result.network_s = time.perf_counter() - start
        return result

    def _infer(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None, call: _Call | None,
               target: tuple[str, int | str | None], input_parameters: dict[str, dict[str, Any]] | None
               ) -> CloudResult:
        model, version = target
        protocol = self._wire.get(model, self.protocol)
        plain = protocol.plain() if model not in self._wire else None
        request = protocol.infer_request(model, version, inputs, outputs, input_parameters)
        resp = self._send("POST", request.path, idempotent=False, content=request.body, headers=request.headers,
                          call=call, passthrough=_REFUSES_BINARY if plain is not None else ())
        if plain is not None and resp.status_code in _REFUSES_BINARY:
            # Binary tensors refused before any was taken: ask in JSON; if that is answered, stay with it.
            refusal = _error_for(f"{self.url}{request.path}", resp)
            protocol, request = plain, plain.infer_request(model, version, inputs, outputs, input_parameters)
            resp = self._send("POST", request.path, idempotent=False, content=request.body,
                              headers=request.headers, call=call)
            log.warning("%s refused binary tensor data (%s); sending %s JSON tensors from now on",
                        self.url, refusal, model)
        self._wire.setdefault(model, protocol)
        answer = protocol.infer_answer(resp.content, resp.headers, f"{self.url}{request.path}", outputs)
        served = answer.model_version
        if served is None and not self.protocol.answers_carry_version:
            served = self._served_version(model, version, call)
        return CloudResult(answer.outputs, answer.model_name or model, served, 0.0, len(request.body),
                           len(resp.content))

    def _abandon(self, call: _Call) -> None:
        with call.lock:
            call.abandoned = True
            self.breaker.failure()  # a server that cannot answer within the deadline is failing, for us

    def _served_version(self, model: str, version: int | str | None, call: _Call | None) -> int | None:
        """For answers that carry no version (TF-Serving): ask the model's status once (an idempotent GET)."""
        if version is not None and str(version).isdigit():
            return int(version)
        path = self.protocol.model_path(model, version)
        if path not in self._served:
            try:
                served = self.protocol.version_from_status(
                    jsonbody.answer(self._send("GET", path, idempotent=True, call=call).content, path))
            except TandemError:
                return None
            if served is None:
                return None
            self._served[path] = served
        return self._served[path]


def _cap(configured: float | None, left: float) -> float:
    return left if configured is None else min(configured, left)
