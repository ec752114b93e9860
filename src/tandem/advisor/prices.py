"""The price table `tandem advise --training` costs training with: prices.toml in this package, or a
file of the user's (``--prices FILE``) in the same form.

Prices are data, each with its source and the date it was read: cloud vCPU-hours (Ray cluster nodes),
GPU-hours (with each GPU's memory bandwidth, how a GPU without a measurement of its own is scaled),
electricity and the power of the user's own machine, and exchange rates into the currency costs are
reported in. A key the table does not know is refused, as is a negative price or a currency without
a rate: a typo in a price file must not silently leave a default in place.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from tandem.errors import ConfigError

DEFAULT_FILE = "prices.toml"
# An ISO 4217 code: USD, EUR, …
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExchangeRate(_Entry):
    rate: float = Field(gt=0)  # one unit of the named currency, in the table's currency
    source: str
    date: str


class Electricity(_Entry):
    price: float = Field(ge=0)
    currency: Currency
    unit: Literal["kWh"] = "kWh"
    source: str
    date: str


class OwnHardware(_Entry):
    watts: float = Field(ge=0)
    source: str


class Offer(_Entry):
    """Something rented by the hour: a vCPU of a cloud instance type, or a GPU."""

    name: str
    price: float = Field(ge=0)
    currency: Currency
    pricing: str = "on-demand"
    # Billed at least this long per instance (EC2 Linux: per second, 60 s at least).
    min_billed_s: float = Field(default=0.0, ge=0)
    source: str
    date: str
    note: str = ""


class CpuOffer(Offer):
    unit: Literal["vCPU-hour"] = "vCPU-hour"


class GpuOffer(Offer):
    unit: Literal["GPU-hour"] = "GPU-hour"
    gpu: str
    memory_tb_s: float = Field(gt=0)
    spec_source: str


class PriceTable(_Entry):
    currency: Currency = "USD"
    exchange: dict[str, ExchangeRate] = Field(default_factory=dict)
    electricity: Electricity
    own_hardware: OwnHardware
    cpu: dict[str, CpuOffer] = Field(default_factory=dict)
    gpu: dict[str, GpuOffer] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rates_for_every_currency(self) -> PriceTable:
        used = {self.electricity.currency, *(o.currency for o in self.cpu.values()),
                *(o.currency for o in self.gpu.values())}
        missing = sorted(used - {self.currency} - set(self.exchange))
        if missing:
            raise ValueError(f"no exchange rate for {', '.join(missing)}: add [exchange.{missing[0]}] with "
                             f"rate = (one {missing[0]} in {self.currency}), source and date")
        return self

    def convert(self, amount: float, currency: str) -> float:
        """``amount`` of ``currency`` in the table's currency."""
        return amount if currency == self.currency else amount * self.exchange[currency].rate

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# Each section's keys, for the message about a key the table does not know.
_SECTIONS: dict[str, type[BaseModel]] = {"exchange": ExchangeRate, "electricity": Electricity,
                                         "own_hardware": OwnHardware, "cpu": CpuOffer, "gpu": GpuOffer}
_KEYED = ("exchange", "cpu", "gpu")  # sections of named entries: [cpu.c7i]


def _section(loc: tuple[Any, ...]) -> tuple[str, type[BaseModel]]:
    """'[gpu.h200]' and its model for an error inside that entry; '' and the table at the top level."""
    head = str(loc[0]) if loc else ""
    if head not in _SECTIONS or len(loc) < 2:
        return "", PriceTable
    if head in _KEYED:
        return (f"[{head}.{loc[1]}]", _SECTIONS[head]) if len(loc) >= 3 else (f"[{head}]", PriceTable)
    return f"[{head}]", _SECTIONS[head]


def _problem(err: Any) -> str:
    loc = tuple(err["loc"])
    section, model = _section(loc)
    key = str(loc[-1]) if loc else ""
    name = f"{section} {key}".strip()
    if err["type"] == "extra_forbidden":
        known = ", ".join(k for k in model.model_fields)
        return f"unknown key {key!r} in {section or 'the top level'} (known: {known})"
    if err["type"] == "missing":
        return f"{section or 'the table'} lacks {key!r}"
    if err["type"] in ("greater_than_equal", "greater_than"):
        bound = "≥ 0" if err["type"] == "greater_than_equal" else "> 0"
        return f"{name} must be {bound}, got {err['input']!r}"
    if err["type"] == "string_pattern_mismatch":
        return f"{name} must be a currency's ISO 4217 code in capitals (USD, EUR), got {err['input']!r}"
    if err["type"] == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return f"{name}: {err['msg']} (got {err['input']!r})"


def parse_prices(data: dict[str, Any], source: str) -> PriceTable:
    try:
        return PriceTable.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(_problem(err) for err in e.errors())
        raise ConfigError(f"{source}: {problems}. docs/advisor.md describes the price table") from e


def load_prices(path: Path | None = None) -> tuple[PriceTable, str]:
    """The price table at ``path`` (default: the one shipped in the package), and where it came from."""
    if path is None:
        text = resources.files("tandem.advisor").joinpath(DEFAULT_FILE).read_text("utf-8")
        where = f"tandem/advisor/{DEFAULT_FILE} (the default)"
    else:
        if not path.is_file():
            raise ConfigError(f"--prices {path}: no such file; copy tandem/advisor/{DEFAULT_FILE} from Tandem's "
                              "package and edit it")
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--prices {path}: cannot be read as UTF-8 text ({e})") from e
        where = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from e
    return parse_prices(data, where), where
