"""What training costs where (tandem.advisor.prices, training_reference, training_cost): the price table's
parsing and refusals, the benchmark figures read from Tandem's own bench/results, and the estimate on
numbers small enough to check by hand."""

from __future__ import annotations

import json
import shutil
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from tandem.advisor import report as report_mod
from tandem.advisor.prices import load_prices, parse_prices
from tandem.advisor.training_cost import amdahl, estimate, job_from_run, parse_spec
from tandem.advisor.training_reference import (
    ASSUMED_SERIAL_FRACTION,
    CLASSIFIER,
    Rate,
    Ray,
    Reference,
    from_bench,
    shipped,
)
from tandem.errors import CheckpointError, ConfigError, InvalidRequest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "results"
DEFAULT_TOML = resources.files("tandem.advisor").joinpath("prices.toml").read_text("utf-8")


def table_data() -> dict:
    return tomllib.loads(DEFAULT_TOML)


# Prices simple enough to check by hand: 1 USD a vCPU-hour, 2 EUR a kWh at 1.5 USD a EUR, 100 W, one GPU
# measured (m: 2 TB/s, 10 USD an hour) and one not (s: 1 TB/s, 1 USD an hour, 60 s at least).
HAND = {
    "currency": "USD",
    "exchange": {"EUR": {"rate": 1.5, "source": "t", "date": "t"}},
    "electricity": {"price": 2.0, "currency": "EUR", "source": "t", "date": "t"},
    "own_hardware": {"watts": 100.0, "source": "t"},
    "cpu": {"c": {"name": "C", "price": 1.0, "currency": "USD", "source": "t", "date": "t"}},
    "gpu": {"m": {"name": "M", "gpu": "GPU M", "price": 10.0, "currency": "USD", "source": "t", "date": "t",
                  "memory_tb_s": 2.0, "spec_source": "t"},
            "s": {"name": "S", "gpu": "GPU S", "price": 1.0, "currency": "USD", "source": "t", "date": "t",
                  "memory_tb_s": 1.0, "spec_source": "t", "min_billed_s": 60}},
}
NET = dict(CLASSIFIER)
# The CPU trains the classifier at 10 ms an image, GPU m at 1 ms (a 10× speedup); Ray: a worker 0.5× the
# plain trainer, 10 s more start-up, serial fraction 0 (perfect scaling).
REF = Reference(
    cpu={"classify": Rate(0.01, 100, 1, 1.0, NET, 2, "cpu"), "stylize": Rate(0.1, 10, 1, 1.0, {"crop": 1}, 2, "st")},
    gpu={"m": {"classify": Rate(0.001, 100, 1, 0.1, NET, None, "gpu")}},
    gpus={"m": {"gpu": "GPU M", "memory_tb_s": 2.0, "spec_source": "t"}},
    ray=Ray(0.5, 5.0, 15.0, 0.0, "assumed", "t"), origin="hand")


def run_files(epochs: int = 3, seconds: tuple[float, ...] = (12.0, 10.0, 11.0), network: dict | None = None,
              **row) -> tuple[dict, dict, list[dict]]:
    config = {"epochs": epochs, **(network or NET)}
    dataset = {"split": {"train": list(range(100)), "val": [], "test": []}}
    history = [{"epoch": i + 1, "seconds": s, "device": "cpu", **row} for i, s in enumerate(seconds)]
    return config, dataset, history


def test_the_shipped_price_table_parses_and_every_entry_names_its_source_and_date():
    table, where = load_prices()
    assert "default" in where and table.currency == "USD"
    assert {"c7i", "m7i"} <= set(table.cpu) and {"h200", "h100", "a10g"} <= set(table.gpu)
    for offer in [*table.cpu.values(), *table.gpu.values()]:
        assert offer.price > 0 and offer.source and offer.date
    assert table.electricity.currency == "EUR" and table.convert(1.0, "EUR") == pytest.approx(1.0824)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["gpu"]["h200"].update(price=-1.0), "[gpu.h200] price must be ≥ 0, got -1.0"),
    (lambda d: d["electricity"].update(price=-0.1), "[electricity] price must be ≥ 0"),
    (lambda d: d["cpu"]["c7i"].update(prise=1.0), "unknown key 'prise' in [cpu.c7i]"),
    (lambda d: d.update(currancy="EUR"), "unknown key 'currancy' in the top level"),
    (lambda d: d["gpu"]["l4"].pop("memory_tb_s"), "[gpu.l4] lacks 'memory_tb_s'"),
    (lambda d: d["electricity"].update(currency="GBP"), "no exchange rate for GBP"),
    (lambda d: d.update(currency="usd"), "ISO 4217"),
    (lambda d: d["exchange"]["EUR"].update(rate=0), "[exchange.EUR] rate must be > 0"),
])
def test_a_bad_price_table_is_refused_saying_where(change, message):
    data = table_data()
    change(data)
    with pytest.raises(ConfigError, match=r"my/prices\.toml: ") as e:
        parse_prices(data, "my/prices.toml")
    assert message in str(e.value)


def test_a_price_file_is_read_from_disk_and_bad_toml_or_a_missing_file_is_refused(tmp_path):
    mine = tmp_path / "prices.toml"
    mine.write_text(DEFAULT_TOML.replace("price = 0.2872", "price = 0.40"))
    table, where = load_prices(mine)
    assert table.electricity.price == 0.40 and where == str(mine)
    mine.write_text("currency = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_prices(mine)
    with pytest.raises(ConfigError, match="no such file"):
        load_prices(tmp_path / "absent.toml")


def test_the_reference_is_read_from_tandems_bench_results_and_matches_the_shipped_one():
    ref = from_bench(BENCH)
    # The H200 runs: 118.0 + 107.3 + 107.2 + 66.0 s over 120 + 120 + 120 + 75 epochs of 1,482 images.
    gpu = ref.gpu["h200"]["classify"]
    assert gpu.seconds_per_image == pytest.approx(398.5 / (435 * 1482), rel=0.01)
    # The CPU run without a validation split: 60 epochs of 1,482 images in 2,047 s.
    assert ref.cpu["classify"].seconds_per_image == pytest.approx(2047.4 / (60 * 1482), rel=0.01)
    assert ref.speedup("h200", "classify") == pytest.approx(37.2, rel=0.02)
    assert {"stylize", "stylize-neural"} <= set(ref.cpu)
    assert ref.ray.worker_factor == pytest.approx(137.8 / 152.1, rel=0.01) and ref.ray.ray_startup_s > ref.ray.local_startup_s
    assert shipped().gpu["h200"]["classify"].seconds_per_image == pytest.approx(gpu.seconds_per_image)


def test_a_measured_multi_node_throughput_gives_amdahls_serial_fraction(tmp_path):
    for name in ("scale.json", "deepart.json"):
        shutil.copy(BENCH / name, tmp_path / name)
    scale = json.loads((tmp_path / "scale.json").read_text())
    scale.pop("multi_node", None)  # the bench's own run may have measured it: start from none
    (tmp_path / "scale.json").write_text(json.dumps(scale))
    assert from_bench(tmp_path).ray.serial_basis == "assumed"
    assert from_bench(tmp_path).ray.serial_fraction == ASSUMED_SERIAL_FRACTION
    # 2 nodes slower than one (bench/scale.py's run on one 2-core machine: 0.59×): no serial fraction describes it.
    scale["multi_node"] = {"train_ips": {"1": 70.5, "2": 41.8}}
    (tmp_path / "scale.json").write_text(json.dumps(scale))
    ray = from_bench(tmp_path).ray
    assert (ray.serial_basis, ray.serial_fraction) == ("assumed", ASSUMED_SERIAL_FRACTION) and "0.59× one" in ray.source
    scale["multi_node"] = {"train_ips": {"1": 100.0, "2": 160.0}}
    (tmp_path / "scale.json").write_text(json.dumps(scale))
    ray = from_bench(tmp_path).ray
    # 2 nodes 1.6× one: 1.6 = 1 / (s + (1 − s)/2) ⇒ s = 2/1.6 − 1 = 0.25.
    assert ray.serial_basis == "measured" and ray.serial_fraction == pytest.approx(0.25)
    assert amdahl(2, ray.serial_fraction) == pytest.approx(1.6)
    with pytest.raises(ConfigError, match="no such folder"):
        from_bench(tmp_path / "absent")


def test_a_run_folder_gives_the_median_epoch_and_its_training_images():
    job = job_from_run("r", *run_files(), vcpus=2)
    assert (job.task, job.epochs, job.images, job.epoch_s, job.basis) == ("classify", 3, 100, 11.0, "measured")
    assert job.epoch_s_range == (10.0, 12.0) and job_from_run("r", *run_files(), vcpus=2, epochs=50).epochs == 50
    stylize = job_from_run("s", {"task": "stylize", "effect": "neural-style", "epochs": 2}, {"train": ["a", "b"]},
                           [{"epoch": 1, "seconds": 4.0}], vcpus=2)
    assert (stylize.task, stylize.images) == ("stylize-neural", 2)


@pytest.mark.parametrize(("files", "message"), [
    (run_files(seconds=()), "holds no epoch yet"),
    (run_files(device="cuda"), "trained on cuda"),
    (run_files(workers=2), "trained by 2 Ray workers"),
    (({"epochs": 1}, {"split": {"train": []}}, [{"seconds": 1.0}]), "names no training images"),
    (({"epochs": 1}, {"split": {"train": [1]}}, [{"epoch": 1}]), "records no epoch's seconds"),
])
def test_a_run_folder_the_estimate_cannot_start_from_is_refused(files, message):
    with pytest.raises(CheckpointError, match=message):
        job_from_run("r", *files, vcpus=2)


def test_a_spec_takes_the_benchmarks_time_per_image():
    job = parse_spec("task=classify, epochs=30,images=500", REF)
    assert (job.task, job.epochs, job.images, job.basis, job.vcpus) == ("classify", 30, 500, "scaled", 2)
    assert job.epoch_s == pytest.approx(5.0) and job.network == NET


@pytest.mark.parametrize(("spec", "message"), [
    ("task=classify,epochs=3", "lacks images"),
    ("task=embed,epochs=3,images=9", "no benchmark measured task 'embed'"),
    ("task=classify,epochs=three,images=9", "not a whole number"),
    ("task=classify,epochs=0,images=9", "at least 1"),
    ("task=classify,epochs=1,images=9,gpus=2", "'gpus=2' is not one of"),
    ("task=classify,epochs=1,epochs=2,images=9", "given twice"),
])
def test_a_bad_spec_is_refused_saying_what_is_wrong(spec, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_spec(spec, REF)


def test_the_estimate_by_hand():
    table = parse_prices(HAND, "hand")
    job = job_from_run("r", *run_files(epochs=10), vcpus=2)  # 11 s an epoch, 100 images
    cost = estimate(job, table, REF, nodes=(1, 4))
    here = cost.get("this-machine")
    # 5 s start-up + 10 · 11 s = 115 s at 100 W: 115/3600 · 0.1 kWh · 2 EUR · 1.5 USD/EUR.
    assert here.wall_s == pytest.approx(115.0) and here.basis == "measured"
    assert here.cost == pytest.approx(115 / 3600 * 0.1 * 2 * 1.5) and here.energy_kwh == pytest.approx(115 / 3600 * 0.1)
    # 4 nodes, perfect scaling, a worker 0.5×: 11 / 2 s an epoch; 15 s + 55 s; 4 nodes × 2 vCPU × 1 USD/h.
    ray4 = cost.get("ray-c-4")
    assert ray4.epoch_s == pytest.approx(5.5) and ray4.wall_s == pytest.approx(70.0)
    assert ray4.cost == pytest.approx(4 * 2 * 70 / 3600) and ray4.basis == "scaled" and ray4.nodes == 4
    # The measured GPU, same network: 1 ms × 100 images = 0.1 s an epoch; 5 + 1 s at 10 USD/h.
    m = cost.get("gpu-m")
    assert (m.epoch_s, m.basis) == (pytest.approx(0.1), "measured") and m.cost == pytest.approx(6 / 3600 * 10)
    # The other GPU, half the bandwidth: 0.2 s an epoch; 7 s billed as 60 s at 1 USD/h.
    s = cost.get("gpu-s")
    assert (s.epoch_s, s.basis) == (pytest.approx(0.2), "scaled") and s.wall_s == pytest.approx(7.0)
    assert s.cost == pytest.approx(60 / 3600) and "memory bandwidth 2 ÷ 1 TB/s" in s.source
    assert cost.cheapest.placement == "this-machine" and cost.fastest.placement == "gpu-m"
    assert estimate(job, table, REF, watts=0).get("this-machine").cost == 0


def test_another_network_or_task_on_a_gpu_is_scaled_by_the_measured_cpu_to_gpu_speedup():
    table = parse_prices(HAND, "hand")
    other = dict(NET, stem_stride=2)
    job = job_from_run("r", *run_files(network=other), vcpus=2)  # 11 s an epoch on the CPU
    cost = estimate(job, table, REF)
    # The benchmark's classifier: 10 ms an image on the CPU, 1 ms on GPU m: 10×.
    assert cost.get("gpu-m").epoch_s == pytest.approx(1.1) and cost.get("gpu-m").basis == "scaled"
    assert cost.get("gpu-s").epoch_s == pytest.approx(2.2) and "speedup" in cost.get("gpu-s").source
    stylize = estimate(parse_spec("task=stylize,epochs=1,images=10", REF), table, REF)
    assert stylize.get("gpu-m").epoch_s == pytest.approx(0.1)  # 0.1 s/image × 10 images ÷ 10
    assert "a spec, not a run" in stylize.notes[0]


def test_the_estimate_refuses_no_nodes_and_negative_watts():
    table = parse_prices(HAND, "hand")
    job = parse_spec("task=classify,epochs=1,images=10", REF)
    with pytest.raises(InvalidRequest, match="--nodes"):
        estimate(job, table, REF, nodes=(0,))
    with pytest.raises(InvalidRequest, match="--training-watts"):
        estimate(job, table, REF, watts=-1)


def test_training_json_and_html_compare_with_serving_and_escape_names(tmp_path):
    import dataclasses

    table = parse_prices(HAND, "hand")
    job = dataclasses.replace(parse_spec("task=classify,epochs=2,images=10", REF), name="<b>run</b>")
    cost = dataclasses.replace(estimate(job, table, REF), serving_usd_per_1000=0.5)
    # 0.5 USD per 1,000 predictions: a training that costs c USD is worth c / 0.0005 predictions.
    assert cost.predictions_for(cost.get("gpu-m")) == pytest.approx(cost.get("gpu-m").cost / 0.0005)
    json_path, html_path = report_mod.write_training(cost, tmp_path, "tandem advise --training x")
    data = json.loads(json_path.read_text())["training"]
    assert set(data["placements"]) == {"this-machine", "ray-c-4", "gpu-m", "gpu-s"}
    assert data["serving"]["cloud_usd_per_1000"] == 0.5 and data["cheapest"] == cost.cheapest.placement
    page = html_path.read_text()
    assert "<b>run</b>" not in page and "&lt;b&gt;run&lt;/b&gt;" in page and "predictions cost to serve" in page
    assert report_mod.fmt_money(0.0053, "USD") == "$0.0053" and report_mod.fmt_money(12.4, "CHF") == "12.40 CHF"
