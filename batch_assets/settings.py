"""Where the platform keeps its files, from environment variables, resolved once to absolute paths.

Runs, the sensor and the local engine's worker are separate processes: absolute paths make them
agree on one state folder whatever their working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from batch_assets.local.config import data_dir_from_env, local_state_dir_from_env
from batch_assets.provider import provider_from_env

DEFAULT_DOCS_PER_MONTH = 60
DEFAULT_FIRST_MONTH = "2024-01-01"
DEFAULT_SENSOR_INTERVAL_SECONDS = 15


@dataclass(frozen=True)
class PlatformSettings:
    provider: str
    data_dir: Path
    duckdb_path: Path
    local_state_dir: Path
    documents_path: str | None
    docs_per_month: int | None  # None: every document of the month
    company_metrics_path: str | None
    first_month: str
    sensor_interval_seconds: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlatformSettings:
        env = os.environ if env is None else env
        data_dir = data_dir_from_env(env)
        docs_raw = env.get("BATCH_ASSETS_DOCS_PER_MONTH") or str(DEFAULT_DOCS_PER_MONTH)
        try:
            docs_per_month = int(docs_raw)
            interval = int(env.get("BATCH_ASSETS_SENSOR_INTERVAL_SECONDS") or DEFAULT_SENSOR_INTERVAL_SECONDS)
        except ValueError as exc:
            raise ValueError(f"BATCH_ASSETS_DOCS_PER_MONTH and BATCH_ASSETS_SENSOR_INTERVAL_SECONDS must be "
                             f"integers: {exc}") from None
        return cls(
            provider=provider_from_env(env),
            data_dir=data_dir,
            duckdb_path=Path(env.get("BATCH_ASSETS_DUCKDB_PATH") or data_dir / "warehouse.duckdb").resolve(),
            local_state_dir=local_state_dir_from_env(env),
            documents_path=env.get("BATCH_ASSETS_DOCUMENTS_PATH") or None,
            docs_per_month=docs_per_month if docs_per_month > 0 else None,
            company_metrics_path=env.get("BATCH_ASSETS_COMPANY_METRICS_PATH") or None,
            first_month=env.get("BATCH_ASSETS_FIRST_MONTH") or DEFAULT_FIRST_MONTH,
            sensor_interval_seconds=max(5, interval),
        )
