"""Where the platform keeps its files, from environment variables, resolved once to absolute paths.

Runs, the sensor and the local engine's worker are separate processes: absolute paths make them
agree on one state folder whatever their working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_assets.ledger.store import ledger_url
from batch_assets.local.config import data_dir_from_env, local_state_dir_from_env
from batch_assets.provider import provider_from_env
from batch_assets.queue_limits import enqueued_token_limits_from_env

DEFAULT_DOCS_PER_MONTH = 60
DEFAULT_FIRST_MONTH = "2024-01-01"
DEFAULT_SENSOR_INTERVAL_SECONDS = 15
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_DELAY_SECONDS = 60.0
DEFAULT_MAX_FAILURE_SHARE = 0.05
DEFAULT_STALL_AFTER_HOURS = 6.0
# Budget caps with a paid provider (upper estimate, batch prices); the local engine is free: no caps by default.
DEFAULT_PAID_MAX_COST_PER_SUBMISSION_USD = 25.0
DEFAULT_PAID_MAX_COST_PER_MONTH_USD = 100.0
_NO_CAP = ("", "none", "off", "no")


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
    ledger_url: str  # the batch ledger: SQLite beside the warehouse, or any SQLAlchemy URL (PostgreSQL)
    max_attempts: int  # defaults of the retry policy (run config overrides them per submission)
    retry_delay_seconds: float
    max_failure_share: float
    stall_after_hours: float  # a batch with no progress for this long is reported
    max_cost_per_submission_usd: float | None  # budget caps' defaults (run config overrides them); None: no cap
    max_cost_per_month_usd: float | None
    enqueued_token_limits: dict[str, int]  # per model, shared by every pipeline, month and backfill

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlatformSettings:
        env = os.environ if env is None else env
        data_dir = data_dir_from_env(env)
        docs_per_month = _number(env, "BATCH_ASSETS_DOCS_PER_MONTH", int, DEFAULT_DOCS_PER_MONTH)
        interval = _number(env, "BATCH_ASSETS_SENSOR_INTERVAL_SECONDS", int, DEFAULT_SENSOR_INTERVAL_SECONDS)
        provider = provider_from_env(env)
        return cls(
            provider=provider,
            data_dir=data_dir,
            duckdb_path=Path(env.get("BATCH_ASSETS_DUCKDB_PATH") or data_dir / "warehouse.duckdb").resolve(),
            local_state_dir=local_state_dir_from_env(env),
            documents_path=env.get("BATCH_ASSETS_DOCUMENTS_PATH") or None,
            docs_per_month=docs_per_month if docs_per_month > 0 else None,
            company_metrics_path=env.get("BATCH_ASSETS_COMPANY_METRICS_PATH") or None,
            first_month=env.get("BATCH_ASSETS_FIRST_MONTH") or DEFAULT_FIRST_MONTH,
            sensor_interval_seconds=max(5, interval),
            ledger_url=ledger_url(data_dir, env),
            max_attempts=_number(env, "BATCH_ASSETS_MAX_ATTEMPTS", int, DEFAULT_MAX_ATTEMPTS),
            retry_delay_seconds=_number(env, "BATCH_ASSETS_RETRY_DELAY_SECONDS", float, DEFAULT_RETRY_DELAY_SECONDS),
            max_failure_share=_number(env, "BATCH_ASSETS_MAX_FAILURE_SHARE", float, DEFAULT_MAX_FAILURE_SHARE),
            stall_after_hours=_number(env, "BATCH_ASSETS_STALL_AFTER_HOURS", float, DEFAULT_STALL_AFTER_HOURS),
            max_cost_per_submission_usd=_cap(env, "BATCH_ASSETS_MAX_COST_PER_SUBMISSION_USD", provider,
                                             DEFAULT_PAID_MAX_COST_PER_SUBMISSION_USD),
            max_cost_per_month_usd=_cap(env, "BATCH_ASSETS_MAX_COST_PER_MONTH_USD", provider,
                                        DEFAULT_PAID_MAX_COST_PER_MONTH_USD),
            enqueued_token_limits=enqueued_token_limits_from_env(env, provider),
        )


def _cap(env: Mapping[str, str], name: str, provider: str, paid_default: float) -> float | None:
    raw = env.get(name)
    if raw is None:
        return None if provider == "local" else paid_default
    if raw.strip().lower() in _NO_CAP:
        return None
    return _number(env, name, float, paid_default)


def _number(env: Mapping[str, str], name: str, cast: type, default: float) -> Any:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {cast.__name__}: set a number or unset it "
                         f"(default {default})") from None
