"""The code location: every component and definition in the defs folder (batch_assets/defs/), built when Dagster
loads it (`dg dev`, `dg check defs`, the deployment's code server), never at import."""

import warnings
from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Dagster 1.13 warns about its own code when it loads components that carry asset checks: it rebuilds each check
# through a beta parameter (repository_data.py, `execution_type`). Nothing a user of this project can act on, so
# it is not shown at every start; any other beta or preview warning still is.
warnings.filterwarnings("ignore", message=r"Parameter `execution_type` of function `AssetsDefinition.__init__`",
                        category=dg.BetaWarning)


@dg.definitions
def defs() -> dg.Definitions:
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        # Dagster finds the defs folder through the project's [tool.dg] settings, in pyproject.toml.
        raise dg.DagsterInvalidDefinitionError(
            f"batch_assets is installed without its project folder ({PROJECT_ROOT} has no pyproject.toml): install "
            "it from the project folder in editable mode (pip install -e .), as scripts/setup.sh and "
            "deploy/Dockerfile do")
    return dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
