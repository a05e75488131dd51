"""Settings of the local Batch API: where its state lives, which models run, which faults to inject."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeGuard, get_args

DEFAULT_DATA_DIR = Path(".batch_assets")
DEFAULT_STATE_DIR = DEFAULT_DATA_DIR / "local_api"


def data_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    """The platform's data folder: ``BATCH_ASSETS_DATA_DIR``, else ``.batch_assets`` (absolute)."""
    env = os.environ if env is None else env
    return Path(env.get("BATCH_ASSETS_DATA_DIR") or DEFAULT_DATA_DIR).resolve()


def local_state_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    """The local engine's state folder, the one rule Dagster and ``local-api serve`` share:
    ``BATCH_ASSETS_LOCAL_STATE_DIR``, else ``<data folder>/local_api`` (absolute)."""
    env = os.environ if env is None else env
    return Path(env.get("BATCH_ASSETS_LOCAL_STATE_DIR") or data_dir_from_env(env) / "local_api").resolve()
ModelBackend = Literal["real", "fake"]  # real local models, or fakes for unit tests
MODEL_BACKENDS: Final[tuple[ModelBackend, ...]] = get_args(ModelBackend)


def is_model_backend(value: object) -> TypeGuard[ModelBackend]:
    return value in MODEL_BACKENDS


def model_backend(value: str) -> ModelBackend:
    """A backend name read from outside (environment, a batch's settings), checked."""
    if not is_model_backend(value):
        raise ValueError(f"model_backend must be 'real' or 'fake', got {value!r}")
    return value


DEFAULT_COMPLETION_WINDOW_SECONDS = 24 * 3600.0
# A worker with nothing to do waits this long for new batches before it exits.
DEFAULT_WORKER_IDLE_SECONDS = 60.0


@dataclass(frozen=True)
class FaultConfig:
    """Deterministic fault injection (same seed, same custom_ids → same failures)."""

    item_failure_rate: float = 0.0  # share of request lines answered with an HTTP error line
    item_failure_status_codes: tuple[int, ...] = (500, 429, 400)
    seed: int = 0
    expire_after_items: int | None = None  # force `expired` once this many items of a batch ran
    item_delay_seconds: float = 0.0  # slow processing: sleep before each item
    api_error_first_n: int = 0  # answer the first N API calls of an engine with api_error_status
    api_error_status: int = 429
    lost_create_responses: int = 0  # the first N batch creates go through, then answer 502 (response lost)
    # Like OpenAI's per-model enqueued-token limit: a batch that would take a model's enqueued input tokens past
    # it is created, then fails validation with token_limit_exceeded.
    enqueued_token_limit: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.item_failure_rate <= 1.0:
            raise ValueError(f"item_failure_rate must be within [0, 1], got {self.item_failure_rate}")
        if self.api_error_status not in (429, 500, 502, 503):
            raise ValueError("api_error_status must be 429, 500, 502 or 503 (statuses the SDK retries)")
        if any(not 400 <= code <= 599 for code in self.item_failure_status_codes):
            raise ValueError("item_failure_status_codes must be HTTP error codes (4xx/5xx)")

    @classmethod
    def from_batch_settings(cls, faults: Mapping[str, Any]) -> FaultConfig:
        """The faults a batch snapshotted (`EngineConfig.batch_settings`); JSON turned its tuples into lists."""
        values: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value
                                  for name, value in faults.items()}
        return cls(**values)


@dataclass(frozen=True)
class EngineConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    model_backend: ModelBackend = "real"
    completion_window_seconds: float = DEFAULT_COMPLETION_WINDOW_SECONDS
    worker_idle_seconds: float = DEFAULT_WORKER_IDLE_SECONDS
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        model_backend(self.model_backend)
        if self.completion_window_seconds <= 0:
            raise ValueError("completion_window_seconds must be positive")

    def batch_settings(self) -> dict[str, Any]:
        """What a batch snapshots at creation, so a detached worker runs it as its creator asked."""
        return {
            "model_backend": self.model_backend,
            "completion_window_seconds": self.completion_window_seconds,
            "faults": asdict(self.faults),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineConfig:
        """Reads BATCH_ASSETS_LOCAL_* variables (and BATCH_ASSETS_DATA_DIR for the state folder, see
        :func:`local_state_dir_from_env`); unset ones keep their defaults."""
        env = os.environ if environ is None else environ

        def number(name: str, cast: type, default: Any) -> Any:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return cast(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a valid {cast.__name__}") from None

        codes_raw = env.get("BATCH_ASSETS_LOCAL_FAILURE_STATUS_CODES")
        faults = FaultConfig(
            item_failure_rate=number("BATCH_ASSETS_LOCAL_FAILURE_RATE", float, 0.0),
            item_failure_status_codes=tuple(int(c) for c in codes_raw.split(",")) if codes_raw else (500, 429, 400),
            seed=number("BATCH_ASSETS_LOCAL_SEED", int, 0),
            expire_after_items=number("BATCH_ASSETS_LOCAL_EXPIRE_AFTER_ITEMS", int, None),
            item_delay_seconds=number("BATCH_ASSETS_LOCAL_ITEM_DELAY_SECONDS", float, 0.0),
            api_error_first_n=number("BATCH_ASSETS_LOCAL_API_ERRORS_FIRST_N", int, 0),
            api_error_status=number("BATCH_ASSETS_LOCAL_API_ERROR_STATUS", int, 429),
            lost_create_responses=number("BATCH_ASSETS_LOCAL_LOSE_CREATE_RESPONSES", int, 0),
            enqueued_token_limit=number("BATCH_ASSETS_LOCAL_ENQUEUED_TOKEN_LIMIT", int, None),
        )
        return cls(
            state_dir=local_state_dir_from_env(env),
            model_backend=model_backend(env.get("BATCH_ASSETS_LOCAL_MODELS") or "real"),
            completion_window_seconds=number(
                "BATCH_ASSETS_LOCAL_COMPLETION_WINDOW_SECONDS", float, DEFAULT_COMPLETION_WINDOW_SECONDS
            ),
            worker_idle_seconds=number("BATCH_ASSETS_LOCAL_WORKER_IDLE_SECONDS", float, DEFAULT_WORKER_IDLE_SECONDS),
            faults=faults,
        )
