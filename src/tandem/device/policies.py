"""Device policies: which placements one ``predict`` tries, in order.

A placement (tandem.advisor.Placement: ``device``, ``cloud``, ``split@K``, ``split@K+int8``) is
where a call runs; a policy is an object whose ``order`` gives the placements to try, the next one
only when the one before could not answer:

- ``Ordered(name, placements)``: a fixed order. ``ONLY_DEVICE``, ``PREFER_DEVICE``, ``PREFER_CLOUD``
  and ``ONLY_CLOUD`` are the four named ones;
- ``Split(placement)``: the split, then the whole model on the device;
- ``Auto(rule)``: an :class:`AutoPolicy` rule picks the first among the placements that can run now
  (``Sides.candidates``), the other side follows; the rule learns from every call (``observe``).

Callers may pass names instead ("prefer_device", "split@5+int8", "auto"): :func:`as_policy`
converts them at the SDK's boundary. A new policy is one more ``Policy`` subclass.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tandem.advisor.placement import CLOUD, DEVICE, Placement
from tandem.errors import ConfigError, InvalidRequest


@dataclass(frozen=True)
class Measurement:
    """What one successful call of ``placement`` cost, in parts: for an AutoPolicy's ``measured``."""

    placement: str
    rows: int
    device_ms: float  # model compute on the device (the whole model, or the head and its int8 encoding)
    round_trip_ms: float  # request out, answer back (0 on the device)
    sent_bytes: int
    received_bytes: int


class AutoPolicy(Protocol):
    """The ``auto`` rule: choose a placement among those available, by name ("device", "cloud",
    "split@K", "split@K+int8"), and learn from what happened. A rule that also has a method
    ``measured(m: Measurement)`` gets each successful call's parts (device time, round trip)."""

    def choose(self, available: Sequence[str]) -> str: ...

    def observe(self, where: str, seconds: float, ok: bool) -> None: ...


@runtime_checkable
class _Measuring(Protocol):
    def measured(self, m: Measurement) -> None: ...


class Sides(Protocol):
    """What a policy may ask of the model it orders placements for (a HybridModel)."""

    auto: AutoPolicy

    def candidates(self) -> list[Placement]:
        """The placements that can run now (at least one: the side configured, to report its error)."""
        ...


class Policy(ABC):
    """Which placements one call tries, in order; told how each attempt went."""

    name: str

    @abstractmethod
    def order(self, sides: Sides) -> tuple[Placement, ...]:
        """The placements to try for this call, the next only when the one before could not answer."""

    def observe(self, sides: Sides, placement: Placement, seconds: float, ok: bool,
                measurement: Measurement | None) -> None:
        """An attempt of ``placement`` took ``seconds`` and answered (``ok``) or failed. Nothing by default."""
        return None

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Ordered(Policy):
    """Always the same placements, in this order."""

    def __init__(self, name: str, placements: Sequence[Placement]) -> None:
        if not placements:
            raise InvalidRequest(f"policy {name!r} needs at least one placement")
        self.name = name
        self.placements = tuple(placements)

    def order(self, sides: Sides) -> tuple[Placement, ...]:
        return self.placements


class Split(Ordered):
    """The bundle's head here and the server's tail (``split@K``, ``split@K+int8``); the whole model
    on the device when that fails."""

    def __init__(self, placement: Placement) -> None:
        if placement.kind != "split":
            raise InvalidRequest(f"Split({placement.name!r}): give a split placement, e.g. Placement.split(5)")
        super().__init__(placement.name, (placement, DEVICE))


class Auto(Policy):
    """``rule`` (None: the model's ``auto=`` rule) chooses the first placement among the candidates;
    the other side follows it. Every attempt is reported to the rule."""

    name = "auto"

    def __init__(self, rule: AutoPolicy | None = None) -> None:
        self.rule = rule

    def order(self, sides: Sides) -> tuple[Placement, ...]:
        choice = self._rule(sides).choose([p.name for p in sides.candidates()])
        first = Placement.parse(choice)
        return (first, CLOUD if first == DEVICE else DEVICE)

    def observe(self, sides: Sides, placement: Placement, seconds: float, ok: bool,
                measurement: Measurement | None) -> None:
        rule = self._rule(sides)
        rule.observe(placement.name, seconds, ok)
        if measurement is not None and isinstance(rule, _Measuring):
            rule.measured(measurement)

    def _rule(self, sides: Sides) -> AutoPolicy:
        return self.rule if self.rule is not None else sides.auto


ONLY_DEVICE = Ordered("only_device", (DEVICE,))
PREFER_DEVICE = Ordered("prefer_device", (DEVICE, CLOUD))
PREFER_CLOUD = Ordered("prefer_cloud", (CLOUD, DEVICE))
ONLY_CLOUD = Ordered("only_cloud", (CLOUD,))
_NAMED: dict[str, Policy] = {p.name: p for p in (ONLY_DEVICE, PREFER_DEVICE, PREFER_CLOUD, ONLY_CLOUD)}
POLICIES: tuple[str, ...] = (*_NAMED, "auto")


def as_policy(policy: str | Policy) -> Policy:
    """A Policy as it is; a name ("prefer_device", "auto", "split@K", "split@K+int8") as its Policy."""
    if isinstance(policy, Policy):
        return policy
    if policy in _NAMED:
        return _NAMED[policy]
    if policy == "auto":
        return Auto()
    if isinstance(policy, str) and policy.startswith("split@"):
        return Split(Placement.parse(policy))  # InvalidRequest naming the forms when malformed
    raise InvalidRequest(f"policy {policy!r}: use one of {', '.join(POLICIES)}, 'split@K' or 'split@K+int8'")


class LatencyRule:
    """EWMA of measured latency per side; the faster wins; every ``probe_every``-th choice tries the
    runner-up so that its estimate stays fresh. A side never measured is tried first. A failure
    counts as ``failure_penalty_s``, and a side whose last attempt failed is tried again every
    ``retry_every`` calls (one failed attempt per ``retry_every`` calls while it stays down; with
    HybridModel the cloud's circuit breaker also keeps a dead endpoint out during its cool-down).
    A probe's or a retry's answer replaces that side's estimate instead of joining the average: the
    side was not used for a while, so its old average (a slow link's, a failure's penalty) says
    nothing about it now. So a link that recovers wins back the calls at its next probe or retry."""

    def __init__(self, alpha: float = 0.3, probe_every: int = 20, failure_penalty_s: float = 10.0,
                 retry_every: int = 5) -> None:
        self.alpha = alpha
        self.probe_every = probe_every
        self.failure_penalty_s = failure_penalty_s
        self.retry_every = retry_every
        self.ewma: dict[str, float] = {}
        self.failed_at: dict[str, int] = {}  # side → the call at which its last attempt failed (while it stays failed)
        self.calls = 0
        self._probing: str | None = None  # the side chosen as a probe or a retry, until its outcome is observed
        self._lock = threading.Lock()

    def choose(self, available: Sequence[str]) -> str:
        if not available:
            raise ConfigError("auto policy: neither the device nor the cloud is available")
        with self._lock:
            self.calls += 1
            unmeasured = [w for w in available if w not in self.ewma]
            if unmeasured:
                return unmeasured[0]
            ranked = sorted(available, key=lambda w: self.ewma[w])
            if len(ranked) > 1:
                due = [w for w in ranked[1:] if w in self.failed_at
                       and self.calls - self.failed_at[w] >= max(self.retry_every, 1)]
                if due:
                    self._probing = due[0]
                    return due[0]
                if self.probe_every > 0 and self.calls % self.probe_every == 0:
                    self._probing = ranked[1]
                    return ranked[1]
            self._probing = None
            return ranked[0]

    def observe(self, where: str, seconds: float, ok: bool) -> None:
        with self._lock:
            fresh = where == self._probing or where in self.failed_at
            self._probing = None
            if not ok:
                self.failed_at[where] = self.calls
                seconds, fresh = max(seconds, self.failure_penalty_s), False
            else:
                self.failed_at.pop(where, None)
            old = self.ewma.get(where)
            self.ewma[where] = seconds if old is None or fresh else self.alpha * seconds + (1 - self.alpha) * old
