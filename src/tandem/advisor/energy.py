"""Device energy per inference: compute at the device's power, plus the radio.

Radio power follows the data-transfer power model of Huang et al., "A Close Examination of
Performance and Power Characteristics of 4G LTE Networks" (MobiSys 2012): while sending at
``R_up`` Mbps and receiving at ``R_down`` Mbps the radio draws ``α_up·R_up + α_down·R_down + β``
mW. So sending B bytes at R Mbps costs ``(α_up·R + β) · 8B/R`` — α per bit plus β for as long as
it takes. While the device waits for the answer (round trip, server time, loss) the radio stays
connected at β. After the last byte an LTE radio stays in its high-power tail for ~11.6 s; with
requests back to back (a camera stream) the tail is shared by all of them, with one request now
and then (a photo) each request pays it all: ``tail_share`` says which (0 … 1).

Everything here is in mW and ms, so products are µJ; results are in mJ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from tandem.advisor.networks import NetworkProfile, Transfer
from tandem.errors import InvalidRequest


@dataclass(frozen=True)
class RadioPower:
    alpha_up_mw_per_mbps: float
    alpha_down_mw_per_mbps: float
    beta_mw: float
    tail_mw: float
    tail_ms: float
    source: str


# Huang et al. 2012, Table 3 (data transfer power model) and the measured LTE/3G/WiFi tails.
_LTE = RadioPower(438.39, 51.97, 1288.04, 1060.0, 11576.0, "Huang et al., MobiSys 2012, LTE")
_3G = RadioPower(868.98, 122.12, 817.88, 803.9, 8088.2, "Huang et al., MobiSys 2012, 3G (UMTS)")
RADIO_POWER: dict[str, RadioPower] = {
    "lte": _LTE,
    # No published model of the same kind for 5G NR or 2G: the nearest generation's figures.
    "5g": replace(_LTE, source="assumed equal to LTE (Huang et al., MobiSys 2012)"),
    "3g": _3G,
    "2g": replace(_3G, source="assumed equal to 3G (Huang et al., MobiSys 2012)"),
    "wifi": RadioPower(283.17, 137.01, 132.86, 119.3, 238.1, "Huang et al., MobiSys 2012, WiFi"),
    "wired": RadioPower(0.0, 0.0, 0.0, 0.0, 0.0, "a wired link: no radio on the device"),
    "none": RadioPower(0.0, 0.0, 0.0, 0.0, 0.0, "offline: no radio use"),
}


@dataclass(frozen=True)
class EnergyModel:
    tail_share: float = 0.0  # fraction of the radio's tail energy charged to each request

    def __post_init__(self) -> None:
        if not 0 <= self.tail_share <= 1:
            raise InvalidRequest(f"radio tail share is a fraction in [0, 1], got {self.tail_share}")

    def to_dict(self) -> dict:
        return asdict(self)


def compute_mj(device_ms: float, watts: float) -> float:
    return device_ms * watts  # W·ms = mJ


def radio_mj(network: NetworkProfile, t: Transfer, wait_ms: float, model: EnergyModel | None = None) -> float:
    """Radio energy for one request: sending, receiving, waiting connected (``wait_ms`` of server time
    plus the round trip and any loss penalty in ``t``) and ``tail_share`` of the tail."""
    p = RADIO_POWER[network.radio]
    up_uj = (p.alpha_up_mw_per_mbps * network.up_mbps + p.beta_mw) * t.up_ms
    down_uj = (p.alpha_down_mw_per_mbps * network.down_mbps + p.beta_mw) * t.down_ms
    idle_uj = p.beta_mw * (t.rtt_ms + t.loss_ms + wait_ms)
    tail_uj = (model.tail_share if model else 0.0) * p.tail_mw * p.tail_ms
    return (up_uj + down_uj + idle_uj + tail_uj) / 1000.0


def stream_radio_mj(network: NetworkProfile, duration_ms: float, up_bytes: float, down_bytes: float) -> float:
    """Radio energy of a stream (live video) that sends ``up_bytes`` and receives ``down_bytes`` over
    ``duration_ms``: frames come faster than the radio's tail, so it stays connected (β) the whole
    time, and each bit costs α on top — Huang et al.'s ``(α·R + β)·t`` with ``α·R·t = α·bits``, whatever
    the rate. The one tail after the stream ends is left out (it is per stream, not per minute)."""
    p = RADIO_POWER[network.radio]
    # mW/Mbps × bits / 1000 = µJ (1 Mbps = 1,000 bits per ms).
    bits_uj = (p.alpha_up_mw_per_mbps * 8 * up_bytes + p.alpha_down_mw_per_mbps * 8 * down_bytes) / 1000.0
    return (p.beta_mw * duration_ms + bits_uj) / 1000.0
