"""The deployment files in deploy/ hold together, checked with what runs here (no Docker engine, no cluster):
Dagster's own config validation accepts the instance, the containers' commands parse with the real CLIs
they name, and the compose file, the Helm values, the Dockerfile and the code agree with each other."""

from __future__ import annotations

import importlib
import re
import shutil
import tomllib
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import class_from_code_pointer
from dagster_postgres import DagsterPostgresStorage

from batch_assets.defs.backfill_handoff import GATE_LIMIT
from batch_assets.defs.definitions import PROVIDER_TAG, build_definitions
from batch_assets.provider import PROVIDERS
from batch_assets.settings import PlatformSettings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DAGSTER_SERVICES = ("user_code", "webserver", "daemon")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def instance_config() -> Mapping[str, Any]:
    return load_yaml(DEPLOY / "dagster.yaml")


def compose() -> dict[str, Any]:
    """docker-compose.yaml with `${VAR:-default}` replaced by its default, as compose does with VAR unset."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), (DEPLOY / "docker-compose.yaml").read_text())
    assert "${" not in text, "every variable in docker-compose.yaml needs a default (${VAR:-default})"
    return yaml.safe_load(text)


def helm_values() -> dict[str, Any]:
    return load_yaml(DEPLOY / "helm" / "values.yaml")


def env_names(config: Any) -> set[str]:
    """Every `{env: NAME}` a Dagster config reads."""
    if isinstance(config, dict):
        if set(config) == {"env"}:
            return {config["env"]}
        return set().union(*(env_names(v) for v in config.values())) if config else set()
    if isinstance(config, list):
        return set().union(*(env_names(v) for v in config)) if config else set()
    return set()


def dg_project() -> dict[str, Any]:
    """The [tool.dg.project] table: where `dg` (and the code location) find the project's definitions."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]


def code_location_module() -> str:
    return dg_project()["code_location_target_module"]


def module_argument(args: list[str]) -> str:
    return args[args.index("-m") + 1]


def assert_instance_accepted(folder: Path) -> Mapping[str, Any]:
    """Dagster's validation of a dagster.yaml, then of each pluggable class's own config, without connecting."""
    config, _ = dagster_instance_config(str(folder))
    sections = {name: config[name] for name in ("run_coordinator", "run_launcher", "compute_logs",
                                                "local_artifact_storage", "scheduler") if name in config}
    for name, section in sections.items():
        klass = class_from_code_pointer(section["module"], section["class"])
        result = validate_config(klass.config_type(), section.get("config") or {})
        assert result.success, f"{name}: {[e.message for e in result.errors]}"
    if "postgres" in config.get("storage", {}):
        result = validate_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
        assert result.success, [e.message for e in result.errors]
    return config


def parse_command(argv: list[str]) -> click.Context:
    """Parses a container's command with the real command line it names (console script → click command →
    sub-commands → options), as the container would, without running it."""
    executable, *args = argv
    scripts = {entry.name: entry for entry in entry_points(group="console_scripts")}
    assert executable in scripts, f"{executable} is not a console script installed with the project"
    command: click.Command = importlib.import_module(scripts[executable].module).cli
    context = command.make_context(executable, list(args))
    while isinstance(command, click.Group):
        # click 8 keeps the sub-command's name apart from the rest of the arguments; click 9 will not.
        remaining = [*getattr(context, "_protected_args", []), *context.args]
        name, command, rest = command.resolve_command(context, remaining)
        assert command is not None, f"{argv}: no sub-command {name}"
        context = command.make_context(name, rest, parent=context)
    return context


def test_the_deploy_instance_is_accepted_by_dagster() -> None:
    config = assert_instance_accepted(DEPLOY)
    assert set(config["storage"]) == {"postgres"}  # runs, event logs and schedules all in PostgreSQL
    assert env_names(config["storage"]) == {"DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_USER",
                                           "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB"}
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dagster-postgres installs psycopg2.
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert helm_values()["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1  # pool "duckdb": one warehouse writer


def test_run_limits_cover_every_provider_and_every_job_carries_its_provider(tmp_path: Path) -> None:
    limits = instance_config()["concurrency"]["runs"]["tag_concurrency_limits"]
    provider_limits = [limit for limit in limits if limit["key"] == PROVIDER_TAG]
    assert {limit["value"] for limit in provider_limits} == set(PROVIDERS)
    assert GATE_LIMIT in limits  # a backfill's collect runs are held until their batches end
    defs = build_definitions(PlatformSettings.from_env({"BATCH_ASSETS_DATA_DIR": str(tmp_path)}))
    jobs = [job for job in defs.resolve_all_job_defs() if not job.name.startswith("__")]
    assert {"submit_month", "embeddings_collect"} <= {job.name for job in jobs}
    assert all(job.run_tags.get(PROVIDER_TAG) == "local" for job in jobs), [(j.name, j.run_tags) for j in jobs]


def test_compose_runs_postgres_webserver_daemon_and_the_code_location_from_one_image() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", *DAGSTER_SERVICES}
    for name in DAGSTER_SERVICES:
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile", name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    declared = set(compose()["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in declared, volume


def test_every_dagster_container_reaches_the_instance_the_postgres_service_creates() -> None:
    services = compose()["services"]
    database = services["postgres"]["environment"]
    wanted = {"DAGSTER_POSTGRES_HOST": "postgres", "DAGSTER_POSTGRES_PORT": "5432",
              "DAGSTER_POSTGRES_USER": database["POSTGRES_USER"], "DAGSTER_POSTGRES_DB": database["POSTGRES_DB"],
              "DAGSTER_POSTGRES_PASSWORD": database["POSTGRES_PASSWORD"]}
    assert set(wanted) == env_names(instance_config())
    for name in DAGSTER_SERVICES:
        environment = services[name]["environment"]
        assert {key: environment.get(key) for key in wanted} == wanted, name


def test_the_containers_commands_parse_with_the_clis_they_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The commands run in the image's app folder, which holds deploy/workspace.yaml as workspace.yaml.
    shutil.copy(DEPLOY / "workspace.yaml", tmp_path / "workspace.yaml")
    monkeypatch.chdir(tmp_path)
    services = compose()["services"]
    commands = {name: services[name]["command"] for name in DAGSTER_SERVICES}
    commands["user_code healthcheck"] = services["user_code"]["healthcheck"]["test"][1:]
    for name, command in commands.items():
        assert parse_command(command), name
    assert parse_command(commands["user_code"]).params["port"] == 4000
    assert parse_command(commands["webserver"]).params["workspace"] == ("workspace.yaml",)


def test_the_code_location_is_the_projects_module_everywhere() -> None:
    module = code_location_module()
    importlib.import_module(module)
    (entry,) = load_yaml(ROOT / "workspace.yaml")["load_from"]  # `dg dev -w workspace.yaml`, scripts/dev.sh
    assert (entry["python_module"]["module_name"], entry["python_module"]["location_name"]) == (
        module, dg_project()["code_location_name"])
    assert module_argument(compose()["services"]["user_code"]["command"]) == module
    dockerfile_cmd = re.search(r"^CMD (\[.*\])$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_cmd and module_argument(yaml.safe_load(dockerfile_cmd.group(1))) == module
    (deployment,) = helm_values()["dagster-user-deployments"]["deployments"]
    assert module_argument(deployment["dagsterApiGrpcArgs"]) == module


def test_the_workspace_points_at_the_code_location_service() -> None:
    (entry,) = load_yaml(DEPLOY / "workspace.yaml")["load_from"]
    server = entry["grpc_server"]
    user_code = parse_command(compose()["services"]["user_code"]["command"]).params
    assert (server["host"], server["port"]) == ("user_code", user_code["port"])
    assert server["location_name"] == dg_project()["code_location_name"]


def test_the_dockerfile_copies_files_that_exist_and_installs_the_instance_support() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    sources = [part for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE) for part in line.split()[:-1]]
    assert sources and all((ROOT / source).exists() for source in sources), sources
    # The instance lands in DAGSTER_HOME; the workspace in the folder the containers' commands run in.
    copies = dict(line.split() for line in re.findall(r"^COPY (\S+ \S+)$", text, re.MULTILINE))
    dagster_home = re.search(r"^ENV DAGSTER_HOME=(.+)$", text, re.MULTILINE)
    assert dagster_home and copies["deploy/dagster.yaml"] == f"{dagster_home.group(1)}/dagster.yaml"
    assert copies["deploy/workspace.yaml"] == f"{re.findall(r'^WORKDIR (.+)$', text, re.MULTILINE)[-1]}/workspace.yaml"
    # Editable: the code location finds its defs folder through the project's pyproject.toml.
    assert re.search(r'^RUN pip install --no-cache-dir -e "\.\[\$\{EXTRAS\}\]"', text, re.MULTILINE)
    extras = re.search(r"^ARG EXTRAS=(.+)$", text, re.MULTILINE)
    assert extras and {"local", "deploy"} <= set(extras.group(1).split(","))
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"local", "deploy", "k8s", "docker"} <= set(optional)
    assert any(pin.startswith("dagster-postgres==") for pin in optional["deploy"])
    data_dir = re.search(r"^ENV BATCH_ASSETS_DATA_DIR=(.+)$", text, re.MULTILINE)
    assert data_dir and f"batch_assets_data:{data_dir.group(1)}" in compose()["services"]["user_code"]["volumes"]


def test_helm_values_launch_each_run_as_a_job_with_the_shared_data_volume() -> None:
    values = helm_values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {item["name"]: item["value"] for item in deployment["env"]}
    mounts = {m["mountPath"]: m["name"] for m in deployment["volumeMounts"]}
    assert env["BATCH_ASSETS_DATA_DIR"] in mounts
    claim = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]}
    assert mounts[env["BATCH_ASSETS_DATA_DIR"]] in claim
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert launcher["config"]["k8sRunLauncher"]["volumeMounts"] == deployment["volumeMounts"]
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["postgresql"]["postgresqlPassword"] == ""  # from a Secret, never from the values file


def test_helm_concurrency_is_the_deploy_instances(tmp_path: Path) -> None:
    helm = helm_values()["concurrency"]
    assert helm["enabled"] is True
    # The chart writes these camelCase values into the instance's snake_case `concurrency` section.
    rendered = {"pools": {"default_limit": helm["pools"]["defaultLimit"]},
                "runs": {"max_concurrent_runs": helm["runs"]["maxConcurrentRuns"],
                         "tag_concurrency_limits": helm["runs"]["tagConcurrencyLimits"]}}
    assert rendered == instance_config()["concurrency"]
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({
        "run_coordinator": {"module": "dagster", "class": "QueuedRunCoordinator"},
        "concurrency": rendered}))
    assert_instance_accepted(tmp_path)
