"""Cloud cost per 1,000 predictions: instance time at the measured throughput, plus bandwidth.

    compute $/1000 = 1000 · instance $/hour / 3600 / (images/s · utilisation)
    bandwidth $/1000 = 1000 · (up_bytes · ingress $/GB + down_bytes · egress $/GB) / 1e9

Throughput is what the server part sustains: the whole model's batched throughput measured on
this machine, scaled by the part's share of the whole model's batch-1 time and by the server's
speed factor. The defaults are AWS list prices (us-east-1, on-demand): c6i.large (2 vCPU, the size
of the machine the FACTS were measured on) at $0.085/hour; data transfer out to the internet at
$0.09/GB (the first 10 TB a month), data transfer in free. Utilisation 1.0 is a lower bound: a
server kept at 50% load costs twice as much per prediction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tandem.errors import InvalidRequest


@dataclass(frozen=True)
class CloudPrices:
    instance_usd_per_hour: float = 0.085
    egress_usd_per_gb: float = 0.09
    ingress_usd_per_gb: float = 0.0
    utilisation: float = 1.0
    source: str = ("AWS on-demand list prices, us-east-1: EC2 c6i.large $0.085/h; data transfer out "
                   "$0.09/GB (first 10 TB/month), in free")

    def __post_init__(self) -> None:
        if self.instance_usd_per_hour < 0 or self.egress_usd_per_gb < 0 or self.ingress_usd_per_gb < 0:
            raise InvalidRequest("cloud prices must be ≥ 0")
        if not 0 < self.utilisation <= 1:
            raise InvalidRequest(f"utilisation is a fraction in (0, 1], got {self.utilisation}")

    def to_dict(self) -> dict:
        return asdict(self)


def compute_usd_per_1000(images_per_s: float, prices: CloudPrices) -> float:
    if images_per_s <= 0:
        raise InvalidRequest(f"throughput must be > 0 images/s, got {images_per_s}")
    return 1000.0 * prices.instance_usd_per_hour / 3600.0 / (images_per_s * prices.utilisation)


def bandwidth_usd_per_1000(up_bytes: int, down_bytes: int, prices: CloudPrices) -> float:
    return 1000.0 * (up_bytes * prices.ingress_usd_per_gb + down_bytes * prices.egress_usd_per_gb) / 1e9
