"""What training costs where: wall time and money to train a run on this machine, on a Ray cluster of N
CPU nodes, and on rented GPUs (`tandem advise --training`; docs/advisor.md gives the formulas).

A :class:`TrainingJob` is what to train — a task, epochs, images per epoch and seconds per epoch on
some machine — read from a run folder's files (:func:`job_from_run`: its measured epoch times) or from
a spec (:func:`parse_spec`: a benchmark's measured time per image). :func:`estimate` prices it with a
:class:`~tandem.advisor.prices.PriceTable` and the benchmark figures of
:mod:`tandem.advisor.training_reference`:

    this machine   wall = start-up + epochs · epoch_s;           cost = watts · wall · electricity price
    Ray, N nodes   wall = Ray start-up + epochs · epoch_s / (worker factor · speedup(N)),
                   speedup(N) = 1 / (s + (1 − s)/N)  (Amdahl);   cost = N · vCPUs · $/vCPU-hour · wall
    GPU g          epoch_g = images · the GPU's measured s/image         (the same task and network)
                           | epoch_s / measured CPU→GPU speedup         (another network or task)
                   × bandwidth(measured GPU) / bandwidth(g)  for a GPU other than the one measured;
                   wall = start-up + epochs · epoch_g;           cost = $/GPU-hour · wall

Every estimate says whether its time is ``measured`` (this job's own epoch times, or a benchmark's of the
same task and network on that hardware) or ``scaled`` (from a measurement by a stated factor), and how.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from tandem.advisor.prices import CpuOffer, GpuOffer, PriceTable
from tandem.advisor.training_reference import Rate, Reference
from tandem.errors import CheckpointError, InvalidRequest

# The settings of a run's config.json that decide what an image costs to train (training_reference's
# CLASSIFIER and STYLIZER name the same): a GPU measurement counts as this run's only when all match.
NETWORK_KEYS = {"classify": ("objective", "height", "width", "stem_stride", "width_mult", "batch_size", "augment"),
                "embed": ("objective", "backbone", "align_size", "stem_stride", "width_mult", "batch_size", "teacher"),
                "stylize": ("photo_size", "crop", "batch_size"),
                "stylize-neural": ("photo_size", "crop", "batch_size")}
DEFAULT_NODES = (4,)


@dataclass(frozen=True)
class TrainingJob:
    name: str
    task: str  # classify, embed, stylize, stylize-neural
    epochs: int  # to estimate
    images: int  # training images per epoch
    epoch_s: float  # seconds an epoch took on a machine of `vcpus` vCPUs
    vcpus: int
    network: dict[str, Any]
    basis: str  # measured: this run's own epochs; scaled: a benchmark's seconds per image × images
    source: str
    measured_epochs: int = 0
    epoch_s_range: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _task_of(config: dict[str, Any]) -> str:
    if config.get("task") == "stylize":
        return "stylize-neural" if config.get("effect") == "neural-style" else "stylize"
    return str(config.get("objective", "classify"))


def job_from_run(name: str, config: dict[str, Any], dataset: dict[str, Any], history: list[dict[str, Any]], *,
                 vcpus: int, epochs: int | None = None) -> TrainingJob:
    """The job a run folder describes (its config.json, dataset.json and history.json), its epoch time the
    median of its measured epochs. ``epochs``: how many to estimate (default: the run's --epochs)."""
    task = _task_of(config)
    if task not in NETWORK_KEYS:
        raise CheckpointError(f"{name}: a run of task {task!r}, which the estimate does not know; it knows "
                              f"{', '.join(NETWORK_KEYS)}")
    train = dataset.get("train") if task.startswith("stylize") else dataset.get("split", {}).get("train")
    if not isinstance(train, list) or not train:
        raise CheckpointError(f"{name}: dataset.json names no training images; is this a run folder written by "
                              "`tandem train`?")
    rows = [h for h in history if isinstance(h, dict)]
    if not rows:
        raise CheckpointError(f"{name}: history.json holds no epoch yet, so there is no epoch time to start from: "
                              "train at least one epoch (tandem train … --epochs 1), or give a spec instead "
                              "(--training task=classify,epochs=30,images=1500)")
    devices = sorted({str(h.get("device", "cpu")) for h in rows} - {"cpu"})
    if devices:
        raise CheckpointError(f"{name}: trained on {', '.join(devices)}; the estimate scales epoch times measured on "
                              "a CPU: train one epoch on the CPU (--device cpu --epochs 1) and pass that folder")
    workers = max(int(h.get("workers", 1)) for h in rows)
    if workers > 1:
        raise CheckpointError(f"{name}: trained by {workers} Ray workers; the estimate starts from one plain trainer's "
                              "epoch times: train one epoch without --workers and pass that folder")
    seconds = [float(h["seconds"]) for h in rows if isinstance(h.get("seconds"), int | float)
               and math.isfinite(h["seconds"]) and h["seconds"] > 0]
    if not seconds:
        raise CheckpointError(f"{name}: history.json records no epoch's seconds; train the run again with this "
                              "Tandem version")
    planned = epochs if epochs is not None else int(config.get("epochs", len(rows)))
    if planned < 1:
        raise InvalidRequest(f"--training-epochs must be at least 1, got {planned}")
    network = {k: config[k] for k in NETWORK_KEYS[task] if k in config}
    median = statistics.median(seconds)
    return TrainingJob(name, task, planned, len(train), median, vcpus, network, "measured",
                       f"this run's history.json: median of {len(seconds)} epoch(s), {median:.1f} s "
                       f"({min(seconds):.1f}–{max(seconds):.1f})", len(seconds), (min(seconds), max(seconds)))


SPEC_KEYS = ("task", "epochs", "images")


def parse_spec(text: str, reference: Reference) -> TrainingJob:
    """``task=classify,epochs=30,images=1500``: a job like a benchmark's run of the task, its epoch time
    that run's seconds per image (on the build machine's CPU) × ``images``."""
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SPEC_KEYS:
            raise InvalidRequest(f"--training {text!r}: {part!r} is not one of {', '.join(k + '=…' for k in SPEC_KEYS)}")
        if key in fields:
            raise InvalidRequest(f"--training {text!r}: {key} is given twice")
        fields[key] = value.strip()
    missing = [k for k in SPEC_KEYS if k not in fields]
    if missing:
        raise InvalidRequest(f"--training {text!r} lacks {', '.join(missing)}: give task=…,epochs=…,images=…, "
                             "or a run folder")
    task = fields["task"]
    rate = reference.cpu.get(task)
    if rate is None:
        raise InvalidRequest(f"--training: no benchmark measured task {task!r} (measured: "
                             f"{', '.join(sorted(reference.cpu)) or 'none'}); train one epoch of it here and pass "
                             "the run folder")
    numbers: dict[str, int] = {}
    for key in ("epochs", "images"):
        try:
            numbers[key] = int(fields[key])
        except ValueError:
            raise InvalidRequest(f"--training: {key}={fields[key]!r} is not a whole number") from None
        if numbers[key] < 1:
            raise InvalidRequest(f"--training: {key} must be at least 1, got {numbers[key]}")
    epoch_s = rate.seconds_per_image * numbers["images"]
    return TrainingJob(f"{task} spec", task, numbers["epochs"], numbers["images"], epoch_s, rate.vcpus or 1,
                       dict(rate.network), "scaled",
                       f"{rate.seconds_per_image * 1000:.2f} ms an image × {numbers['images']:,} images: {rate.source}")


@dataclass(frozen=True)
class Estimate:
    placement: str  # this-machine, ray-KEY-N, gpu-KEY
    kind: str  # here, cluster, gpu
    label: str  # short, for the console
    what: str
    epoch_s: float
    wall_s: float
    cost: float  # in the table's currency
    currency: str
    basis: str  # measured | scaled
    source: str  # how the time was had
    price: str  # the price used, its source and date
    nodes: int = 1
    energy_kwh: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingCost:
    job: TrainingJob
    currency: str
    estimates: list[Estimate]
    ray: dict[str, Any]
    prices_file: str
    reference: str
    notes: list[str] = field(default_factory=list)
    # The cloud placement's cost per 1,000 predictions (tandem.advisor.cost), when a bundle was profiled too.
    serving_usd_per_1000: float | None = None

    @property
    def cheapest(self) -> Estimate:
        return min(self.estimates, key=lambda e: (e.cost, e.wall_s))

    @property
    def fastest(self) -> Estimate:
        return min(self.estimates, key=lambda e: (e.wall_s, e.cost))

    def get(self, placement: str) -> Estimate:
        return next(e for e in self.estimates if e.placement == placement)

    def predictions_for(self, e: Estimate) -> float | None:
        """How many predictions the cloud serves for what training at ``e`` costs (None: no serving cost
        known, or one in another currency than the table's)."""
        if not self.serving_usd_per_1000 or self.currency != "USD":
            return None
        return e.cost / self.serving_usd_per_1000 * 1000.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "job": self.job.to_dict(), "currency": self.currency,
            "placements": {e.placement: e.to_dict() for e in self.estimates},
            "cheapest": self.cheapest.placement, "fastest": self.fastest.placement,
            "ray": self.ray, "prices": self.prices_file, "reference": self.reference, "notes": self.notes}
        if self.serving_usd_per_1000 is not None:
            d["serving"] = {"cloud_usd_per_1000": self.serving_usd_per_1000,
                            "predictions_per_training": {e.placement: self.predictions_for(e) for e in self.estimates}}
        return d


def amdahl(nodes: int, serial: float) -> float:
    return 1.0 / (serial + (1.0 - serial) / nodes)


def _billed_h(wall_s: float, min_billed_s: float) -> float:
    return max(wall_s, min_billed_s) / 3600.0


def _price_text(o: CpuOffer | GpuOffer, table: PriceTable) -> str:
    return (f"{o.price:g} {o.currency}/{o.unit} ({o.pricing}"
            + (f", at least {o.min_billed_s:g} s billed" if o.min_billed_s else "") + f"): {o.source} [{o.date}]"
            + (f"; {o.note}" if o.note else ""))


def _gpu_epoch(job: TrainingJob, key: str, offer: GpuOffer, ref: Reference) -> tuple[float, str, str]:
    """Seconds per epoch of ``job`` on GPU ``key``, its basis, and how it was had."""
    for measured, tasks in ref.gpu.items():
        rate: Rate | None = tasks.get(job.task)
        if rate is None or any(job.network.get(k) != v for k, v in rate.network.items()):
            continue
        epoch = rate.seconds_per_image * job.images
        if measured == key:
            return epoch, "measured", f"{rate.seconds_per_image * 1000:.3f} ms an image × {job.images:,}: {rate.source}"
        ratio = ref.gpus[measured]["memory_tb_s"] / offer.memory_tb_s
        return (epoch * ratio, "scaled",
                f"{ref.gpus[measured]['gpu']}'s measured {rate.seconds_per_image * 1000:.3f} ms an image × "
                f"{job.images:,} × {ratio:.2f} (memory bandwidth {ref.gpus[measured]['memory_tb_s']:g} ÷ "
                f"{offer.memory_tb_s:g} TB/s: {offer.spec_source}); {rate.source}")
    # No measurement of this task and network on a GPU: this job's CPU epoch ÷ a measured CPU → GPU speedup.
    for measured in ref.gpu:
        for task in ref.gpu[measured]:
            speed = ref.speedup(measured, task)
            if speed is None:
                continue
            ratio = ref.gpus[measured]["memory_tb_s"] / offer.memory_tb_s
            how = (f"this job's {job.epoch_s:.1f} s an epoch on {job.vcpus} vCPU ÷ {speed:.1f} (the {task} benchmark's "
                   f"measured CPU → {ref.gpus[measured]['gpu']} speedup, {ref.cpu[task].vcpus} vCPU, the same network "
                   f"on both; no GPU measurement of {job.task} with these settings)")
            if measured != key:
                how += (f" × {ratio:.2f} (memory bandwidth {ref.gpus[measured]['memory_tb_s']:g} ÷ "
                        f"{offer.memory_tb_s:g} TB/s: {offer.spec_source})")
            return job.epoch_s / speed * (1.0 if measured == key else ratio), "scaled", how
    raise InvalidRequest("the training reference holds no GPU measurement to scale from: use the shipped one "
                         "(leave out --bench-results) or a folder with bench/accuracy.py's --device cuda results")


def estimate(job: TrainingJob, table: PriceTable, ref: Reference, *, nodes: tuple[int, ...] = DEFAULT_NODES,
             watts: float | None = None, prices_file: str = "") -> TrainingCost:
    """Wall time and cost of ``job`` on this machine, on Ray clusters of each of ``nodes`` CPU nodes per
    CPU offer of ``table``, and on each of its GPUs."""
    if any(n < 1 for n in nodes):
        raise InvalidRequest(f"--nodes must be at least 1, got {min(nodes)}")
    if watts is not None and watts < 0:
        raise InvalidRequest(f"--training-watts must be ≥ 0, got {watts}")
    cur = table.currency
    ray = ref.ray
    w = table.own_hardware.watts if watts is None else watts
    out: list[Estimate] = []

    wall = ray.local_startup_s + job.epochs * job.epoch_s
    kwh = w * wall / 3600.0 / 1000.0
    elec = table.electricity
    out.append(Estimate(
        "this-machine", "here", "this machine", f"this machine ({job.vcpus} vCPU, {w:g} W)", job.epoch_s, wall,
        table.convert(kwh * elec.price, elec.currency), cur, job.basis,
        f"{job.source}; + {ray.local_startup_s:g} s start-up (the plain trainer's, bench/scale.py)",
        f"electricity {elec.price:g} {elec.currency}/kWh: {elec.source} [{elec.date}]; {w:g} W"
        + ("" if watts is not None else f": {table.own_hardware.source}"), 1, kwh))

    for key, offer in table.cpu.items():
        node_price = offer.price * job.vcpus
        for n in nodes:
            speed = ray.worker_factor * amdahl(n, ray.serial_fraction)
            epoch = job.epoch_s / speed
            wall = ray.ray_startup_s + job.epochs * epoch
            out.append(Estimate(
                f"ray-{key}-{n}", "cluster", f"Ray: {n} × {key}", f"Ray cluster: {n} × {offer.name}, {job.vcpus} vCPU "
                "each", epoch, wall,
                table.convert(n * node_price * _billed_h(wall, offer.min_billed_s), offer.currency), cur, "scaled",
                f"this machine's epoch ÷ {speed:.2f} (one Ray Train worker {ray.worker_factor:.2f}× the plain trainer, "
                f"measured; × Amdahl's speedup {amdahl(n, ray.serial_fraction):.2f} for {n} nodes at serial fraction "
                f"{ray.serial_fraction:g}, {ray.serial_basis}); + {ray.ray_startup_s:g} s Ray start-up, measured",
                f"{n} × {job.vcpus} vCPU × " + _price_text(offer, table), n))

    for key, gpu in table.gpu.items():
        epoch, basis, how = _gpu_epoch(job, key, gpu, ref)
        wall = ray.local_startup_s + job.epochs * epoch
        out.append(Estimate(
            f"gpu-{key}", "gpu", gpu.gpu, f"1 × {gpu.name}", epoch, wall,
            table.convert(gpu.price * _billed_h(wall, gpu.min_billed_s), gpu.currency), cur, basis,
            f"{how}; + {ray.local_startup_s:g} s start-up (this machine's; instance boot and data upload not counted)",
            _price_text(gpu, table)))
    notes = []
    if job.basis == "scaled":
        notes.append("a spec, not a run: this machine's epoch time is the benchmark's, measured on Tandem's "
                     f"{job.vcpus}-vCPU build machine")
    return TrainingCost(job, cur, out, asdict(ray), prices_file, ref.origin, notes)
