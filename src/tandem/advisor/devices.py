"""Device profiles: how much slower than the profiling machine a device runs the model, and its power.

The advisor measures the model on the machine it runs on. A device profile scales those times by
``speed_factor`` = device time ÷ this machine's time (4 = four times slower) and charges
``watts`` while the model runs. The factors are rough, for a first answer before anyone has the
device in hand; the honest number comes from running ``tandem advise`` on the device itself
(profile ``this-machine``) or from passing ``--speed-factor``. docs/advisor.md gives the reasoning
and sources for each figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from tandem.errors import InvalidRequest


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    speed_factor: float  # device time ÷ this machine's time
    watts: float  # power drawn while the model runs (above idle)
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not self.speed_factor > 0:
            raise InvalidRequest(f"device {self.name!r}: speed factor must be > 0, got {self.speed_factor}")
        if not self.watts >= 0:
            raise InvalidRequest(f"device {self.name!r}: watts must be ≥ 0, got {self.watts}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DeviceProfile:
        return cls(**d)

    def calibrated(self, measured_ms: float, profiled_ms: float) -> DeviceProfile:
        """This device with the speed factor its own measurement implies: the SDK times the whole
        model (or any head) on the device and divides by the profile's time for the same part."""
        if not (measured_ms > 0 and profiled_ms > 0):
            raise InvalidRequest(f"calibration needs two positive times, got {measured_ms} and {profiled_ms} ms")
        return replace(self, speed_factor=measured_ms / profiled_ms, source=f"calibrated: {measured_ms:.2f} ms "
                       f"measured on the device ÷ {profiled_ms:.2f} ms profiled")

    def sporadic(self, idle_factor: float) -> DeviceProfile:
        """This device answering a request now and then rather than back to back: every run starts
        from idle, ``idle_factor`` (ModelProfile.idle_factor) slower than the profiled warm runs."""
        if not idle_factor > 0:
            raise InvalidRequest(f"idle factor must be > 0, got {idle_factor}")
        return replace(self, speed_factor=self.speed_factor * idle_factor,
                       source=f"{self.source}; ×{idle_factor:.2f} for runs after idling (sporadic requests)")


# Speed factors assume the profiling machine is a 2-core x86 server (FACTS.md: ~4 ms for the
# 221M-multiply-add celebmatch network at batch 1). Watts are the power above idle while inferring.
DEVICES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile(
            "this-machine", 1.0, 15.0,
            "the machine running `tandem advise` (run it on the device to measure the device)",
            "watts: a laptop-class x86 CPU at its 15 W base power (Intel's U-series processor base power)",
        ),
        DeviceProfile(
            "laptop", 1.0, 15.0,
            "a recent laptop CPU, about as fast per inference as a 2-vCPU cloud instance",
            "watts: Intel Core U-series processor base power, 15 W (Intel ARK)",
        ),
        DeviceProfile(
            "midrange-phone", 4.0, 3.0,
            "a mid-range Android phone (Cortex-A76/A55 class) running ONNX Runtime on its CPU",
            "speed: an estimate - published mobile benchmarks put MobileNet-class fp32 inference on mid-range "
            "phone CPUs in the tens of milliseconds, against ~3-5 ms here; watts: 2-4 busy big Arm cores at "
            "~1 W each",
        ),
        DeviceProfile(
            "raspberry-pi-4", 10.0, 3.7,
            "Raspberry Pi 4 Model B (4× Cortex-A72 at 1.5 GHz)",
            "watts: 6.4 W with all four cores busy minus 2.7 W idle (Pi Dramble power benchmarks, "
            "pidramble.com/wiki/benchmarks/power-consumption); speed: A72 cores without the phone's "
            "newer cores, ~2.5x a mid-range phone",
        ),
    )
}


def device_profile(name: str, speed_factor: float | None = None, watts: float | None = None) -> DeviceProfile:
    """A named profile, with its speed factor or power overridden where given."""
    try:
        base = DEVICES[name]
    except KeyError:
        raise InvalidRequest(f"no device profile {name!r}; choose one of {', '.join(DEVICES)} "
                             "(or any of them with --speed-factor and --device-watts)") from None
    changes: dict = {}
    if speed_factor is not None:
        changes["speed_factor"] = speed_factor
        changes["source"] = f"speed factor {speed_factor:g} given by the user; {base.source}"
    if watts is not None:
        changes["watts"] = watts
    return replace(base, **changes) if changes else base
