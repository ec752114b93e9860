"""Network profiles and the time a request takes on them.

A profile is a round-trip time, uplink and downlink bandwidth, a packet loss rate and the kind of
radio (for the energy model). The defaults are published medians or widely used emulation presets;
``sources`` in each profile and docs/advisor.md say which. Override any of them with
``name:rtt_ms:up_mbps:down_mbps[:loss[:radio]]`` or measure a real link (tandem.advisor.measure).

Time on the wire for one request on a kept-alive connection (no TCP/TLS handshake per request)::

    transfer = RTT + 8·up_bytes / uplink + 8·down_bytes / downlink + loss penalty
    loss penalty = (1 − (1 − p)^packets) · RTO,   RTO = max(200 ms, 2·RTT)

The loss penalty charges one retransmission timeout when any of the request's packets is lost —
requests of a few packets are too short for fast retransmit (RFC 6298 timeouts; 200 ms is Linux's
minimum RTO). Packets are counted at a 1,448-byte payload (1500-byte MTU, TCP timestamps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from tandem.errors import InvalidRequest

Radio = Literal["none", "2g", "3g", "lte", "5g", "wifi", "wired"]
RADIOS: tuple[str, ...] = ("none", "2g", "3g", "lte", "5g", "wifi", "wired")
MSS_BYTES = 1448
MIN_RTO_MS = 200.0


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    rtt_ms: float
    up_mbps: float
    down_mbps: float
    loss: float = 0.0  # packet loss probability, 0..1
    radio: Radio = "lte"
    source: str = ""

    def __post_init__(self) -> None:
        if self.radio not in RADIOS:
            raise InvalidRequest(f"network {self.name!r}: radio must be one of {', '.join(RADIOS)}, got {self.radio!r}")
        if self.online and not (self.up_mbps > 0 and self.down_mbps > 0 and self.rtt_ms >= 0):
            raise InvalidRequest(f"network {self.name!r}: needs rtt ≥ 0 and bandwidths > 0 (or radio 'none' for offline)")
        if not 0 <= self.loss < 1:
            raise InvalidRequest(f"network {self.name!r}: loss is a probability in [0, 1), got {self.loss}")

    @property
    def online(self) -> bool:
        return self.radio != "none"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetworkProfile:
        return cls(**d)

    @classmethod
    def live(cls, rtt_ms: float, up_mbps: float, down_mbps: float | None = None, loss: float = 0.0,
             radio: Radio = "lte", name: str = "live") -> NetworkProfile:
        """A profile from what a device measures now (the SDK's ``auto`` policy)."""
        return cls(name, rtt_ms, up_mbps, down_mbps if down_mbps is not None else up_mbps, loss, radio,
                   "measured on the device")


OFFLINE = NetworkProfile("offline", 0.0, 0.0, 0.0, 0.0, "none", "no connection: only the device can answer")

NETWORKS: dict[str, NetworkProfile] = {
    p.name: p
    for p in (
        OFFLINE,
        NetworkProfile(
            "2g", 800.0, 0.256, 0.280, 0.01, "2g",
            "WebPageTest's '2G' connectivity profile (280/256 kbps, 800 ms RTT); loss: Loadero's 'Edge' "
            "network condition (1%)",
        ),
        NetworkProfile(
            "3g", 300.0, 0.768, 1.6, 0.005, "3g",
            "WebPageTest's '3G' connectivity profile (1.6 Mbps/768 kbps, 300 ms RTT); loss: Loadero's '3G' "
            "network condition (0.5%)",
        ),
        NetworkProfile(
            "4g", 55.0, 6.3, 21.3, 0.002, "lte",
            "Opensignal, State of Mobile USA, May 2019: LTE average download 21.3 Mbps, upload 6.3 Mbps, "
            "latency 44.1-66.4 ms (midpoint taken); Huang et al. (MobiSys 2012) measured LTE medians of "
            "13/6 Mbps; loss: Loadero's '4G' network condition (0.2%)",
        ),
        NetworkProfile(
            "5g", 45.0, 21.08, 166.13, 0.002, "5g",
            "Ookla Speedtest Intelligence, Q3 2021: global 5G medians 166.13 Mbps down, 21.08 Mbps up; "
            "RTT: Opensignal found 5G latency little better than 4G's 44-66 ms, so its low end; "
            "loss: as 4G (assumption)",
        ),
        NetworkProfile(
            "wifi", 21.0, 45.74, 85.73, 0.0, "wifi",
            "Ookla Speedtest Global Index, September 2020: fixed broadband global average 85.73 Mbps down, "
            "45.74 Mbps up, 21 ms latency (home Wi-Fi rides on fixed broadband); loss: 0, as Wi-Fi "
            "retransmits at the link layer (assumption)",
        ),
    )
}


def parse_network(spec: str) -> NetworkProfile:
    """A profile name, or ``name:rtt_ms:up_mbps:down_mbps[:loss[:radio]]`` for one of your own."""
    if ":" not in spec:
        try:
            return NETWORKS[spec]
        except KeyError:
            raise InvalidRequest(f"no network profile {spec!r}; choose one of {', '.join(NETWORKS)} or give "
                                 "NAME:RTT_MS:UP_MBPS:DOWN_MBPS[:LOSS[:RADIO]]") from None
    parts = spec.split(":")
    if not 4 <= len(parts) <= 6:
        raise InvalidRequest(f"network {spec!r}: expected NAME:RTT_MS:UP_MBPS:DOWN_MBPS[:LOSS[:RADIO]]")
    name = parts[0]
    try:
        rtt, up, down = (float(x) for x in parts[1:4])
        loss = float(parts[4]) if len(parts) > 4 else 0.0
    except ValueError:
        raise InvalidRequest(f"network {spec!r}: RTT, bandwidths and loss must be numbers") from None
    base = NETWORKS.get(name)
    radio = parts[5] if len(parts) > 5 else (base.radio if base is not None and base.online else "lte")
    return NetworkProfile(name, rtt, up, down, loss, radio, "given on the command line")  # type: ignore[arg-type]


@dataclass(frozen=True)
class Transfer:
    rtt_ms: float
    up_ms: float
    down_ms: float
    loss_ms: float

    @property
    def total_ms(self) -> float:
        return self.rtt_ms + self.up_ms + self.down_ms + self.loss_ms


def packets(nbytes: int) -> int:
    return max(1, math.ceil(nbytes / MSS_BYTES))


def transfer(network: NetworkProfile, up_bytes: int, down_bytes: int) -> Transfer:
    """Time to send ``up_bytes`` and get ``down_bytes`` back on ``network`` (one request)."""
    if not network.online:
        raise InvalidRequest(f"network {network.name!r} is offline: nothing can be sent")
    up_ms = up_bytes * 8 / (network.up_mbps * 1000.0)  # 1 Mbps = 1,000 bits per ms
    down_ms = down_bytes * 8 / (network.down_mbps * 1000.0)
    p_any_loss = 1.0 - (1.0 - network.loss) ** (packets(up_bytes) + packets(down_bytes))
    loss_ms = p_any_loss * max(MIN_RTO_MS, 2 * network.rtt_ms)
    return Transfer(network.rtt_ms, up_ms, down_ms, loss_ms)
