"""The device SDK: the model updater (OTA) and its local store.

``ModelUpdater`` keeps a model current on a device (docs/ota.md); ``ModelStore`` is its crash-safe
local store. Nothing here imports torch or onnx: ONNX Runtime, numpy, zstandard, cryptography and
httpx are all a device needs.
"""

from tandem.device.client import Progress
from tandem.device.conditions import DeviceConditions, DeviceState, DownloadConditions
from tandem.device.install import UpdateResult
from tandem.device.store import ModelStore
from tandem.device.updater import InstalledVersion, LoadedModel, ModelUpdater

__all__ = ["DeviceConditions", "DeviceState", "DownloadConditions", "InstalledVersion", "LoadedModel",
           "ModelStore", "ModelUpdater", "Progress", "UpdateResult"]
