"""The placement advisor: should this model run on the device, in the cloud, or split between them?

Measure the bundle here (:func:`profile_bundle`), describe the device, the server and the network
(:mod:`devices`, :class:`ServerProfile`, :mod:`networks`), then predict every placement
(:func:`predict`, pure) and pick the best per network and objective (:func:`advise`, :func:`choose`).
docs/advisor.md gives the formulas and the sources of every default.
"""

from tandem.advisor.cost import CloudPrices
from tandem.advisor.devices import DEVICES, DeviceProfile, device_profile
from tandem.advisor.energy import EnergyModel
from tandem.advisor.networks import NETWORKS, NetworkProfile, parse_network, transfer
from tandem.advisor.placement import (
    CLOUD,
    DEVICE,
    OBJECTIVES,
    Advice,
    Decision,
    Placement,
    Prediction,
    ServerProfile,
    advise,
    choose,
    decide,
    placements,
    predict,
)
from tandem.advisor.profile import CutProfile, ModelProfile


def __getattr__(name: str) -> object:
    # The profiler needs the onnx package; predicting from a saved profile (the device SDK) does not.
    if name == "profile_bundle":
        from tandem.advisor.profiler import profile_bundle

        return profile_bundle
    raise AttributeError(f"module 'tandem.advisor' has no attribute {name!r}")


__all__ = [
    "CLOUD", "DEVICE", "DEVICES", "NETWORKS", "OBJECTIVES", "Advice", "CloudPrices", "CutProfile", "Decision",
    "DeviceProfile", "EnergyModel", "ModelProfile", "NetworkProfile", "Placement", "Prediction", "ServerProfile",
    "advise", "choose", "decide", "device_profile", "parse_network", "placements", "predict", "profile_bundle",
    "transfer",
]
