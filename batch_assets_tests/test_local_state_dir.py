"""`batch-assets local-api serve` and Dagster agree on the local engine's state folder by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_assets import cli
from batch_assets.local.config import EngineConfig
from batch_assets.settings import PlatformSettings


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[EngineConfig]:
    """Runs `local-api serve` up to the point where it would listen, and keeps the config it got."""
    configs: list[EngineConfig] = []
    monkeypatch.setattr("batch_assets.local.server.serve", lambda *a, config, **k: configs.append(config))
    for name in ("BATCH_ASSETS_DATA_DIR", "BATCH_ASSETS_LOCAL_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    return configs


def test_serve_uses_the_data_folder_dagster_uses(served: list[EngineConfig], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_ASSETS_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["local-api", "serve"]) == 0
    assert served[-1].state_dir == tmp_path / "data" / "local_api"
    assert served[-1].state_dir == PlatformSettings.from_env().local_state_dir


def test_the_state_folder_variable_and_the_flag_still_win(served: list[EngineConfig], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_ASSETS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BATCH_ASSETS_LOCAL_STATE_DIR", str(tmp_path / "engine"))
    assert cli.main(["local-api", "serve"]) == 0
    assert served[-1].state_dir == tmp_path / "engine" == PlatformSettings.from_env().local_state_dir
    assert cli.main(["local-api", "serve", "--state-dir", str(tmp_path / "flag")]) == 0
    assert served[-1].state_dir == tmp_path / "flag"


def test_the_default_is_an_absolute_path_under_the_working_folder(
    served: list[EngineConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["local-api", "serve"]) == 0
    assert served[-1].state_dir == tmp_path / ".batch_assets" / "local_api"  # absolute: workers agree
    assert EngineConfig.from_env({}).state_dir == served[-1].state_dir
