"""The device SDK: hybrid prediction (device or cloud), the model updater (OTA) and its local store.

``HybridModel`` runs one ``predict`` on the device, in the cloud or split between them by policy
(``Policy`` objects, tandem.device.policies, or their names), within an optional deadline
(docs/device.md); ``AdvisorRule`` is the ``auto`` policy's rule driven by the placement advisor;
``CloudClient`` talks to any Open Inference Protocol v2 (``OipV2``) or TF-Serving (``TfServing``) endpoint.

``ModelUpdater`` keeps a model current on a device (docs/ota.md); ``ModelStore`` is its crash-safe
local store. Nothing here imports torch or onnx: ONNX Runtime, numpy, zstandard, cryptography and
httpx are all a device needs.
"""

from tandem.device.advisor_rule import AdvisorRule
from tandem.device.cloud_client import CircuitBreaker, CircuitOpen, CloudClient, CloudResult
from tandem.device.conditions import DeviceConditions, DeviceState, DownloadConditions
from tandem.device.deadline import Deadline, DeadlineExceeded
from tandem.device.hybrid import (
    AutoPolicy,
    HybridModel,
    LatencyRule,
    Measurement,
    NothingAvailable,
    Prediction,
    Timings,
)
from tandem.device.install import UpdateResult
from tandem.device.model_store import ModelStore
from tandem.device.ota_client import Progress
from tandem.device.policies import Policy
from tandem.device.updater import InstalledVersion, LoadedModel, ModelUpdater, SignedAnswer
from tandem.device.wire import OipV2, TfServing, WireProtocol

__all__ = ["AdvisorRule", "AutoPolicy", "CircuitBreaker", "CircuitOpen", "CloudClient", "CloudResult", "Deadline",
           "DeadlineExceeded", "DeviceConditions", "DeviceState", "DownloadConditions", "HybridModel",
           "InstalledVersion", "LatencyRule", "LoadedModel", "Measurement", "ModelStore", "ModelUpdater", "NothingAvailable",
           "OipV2", "Policy", "Prediction", "Progress", "SignedAnswer", "TfServing", "Timings", "UpdateResult",
           "WireProtocol"]
