"""Every setting Tandem reads, in one typed place (environment variables prefixed ``TANDEM_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="ignore")

    home: Path = Field(
        default=Path.home() / ".tandem",
        description="Tandem's own writable folder: caches, default run and bundle locations.",
    )
    data_home: Path | None = Field(
        default=None,
        description="Folder that holds lfw_home/ (scikit-learn's layout). Read only; never written.",
    )
    ort_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose (one per core).",
    )

    def require_data_home(self) -> Path:
        if self.data_home is None:
            raise ConfigError(
                "No LFW location set: set TANDEM_DATA_HOME to the folder that holds lfw_home/ "
                "(in this repository: ../shared/datasets), or pass --data DIR with your own images."
            )
        lfw = self.data_home / "lfw_home"
        if not lfw.is_dir():
            raise ConfigError(
                f"TANDEM_DATA_HOME={self.data_home} has no lfw_home/ folder: point it at the folder "
                "that holds lfw_home/lfw_funneled/<Person>/*.jpg."
            )
        return self.data_home


def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        raise ConfigError(f"invalid TANDEM_* environment setting:\n{e}") from e
