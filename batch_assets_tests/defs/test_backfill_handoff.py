"""The backfill hand-off without a daemon: which held collect runs the sensor releases, and when the instance holds
them at all. (`batch_assets_tests/test_dagster_dev.py` runs the whole hand-off on `dg dev` with the daemon.)"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._core.test_utils import create_run_for_test

from batch_assets.defs.backfill_handoff import (
    COLLECT_FOR_TAG,
    GATE_HELD,
    GATE_LIMIT,
    GATE_RELEASED,
    GATE_TAG,
    collect_for,
    gate_is_configured,
    release_held_collect,
    release_settled,
)

MONTH = "2024-03-01"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(overrides={
            "run_coordinator": {"module": "dagster", "class": "QueuedRunCoordinator"},
            "concurrency": {"runs": {"tag_concurrency_limits": [GATE_LIMIT]}}}) as test_instance:
        yield test_instance


def _held_run(instance: dg.DagsterInstance, pipeline: str = "sentiment", month: str = MONTH) -> str:
    job_name = f"{pipeline}_collect"
    origin = RemoteJobOrigin(repository_origin=RemoteRepositoryOrigin(
        code_location_origin=RegisteredCodeLocationOrigin("batch_assets"), repository_name="__repository__"),
        job_name=job_name)
    run = create_run_for_test(instance, job_name=job_name, status=dg.DagsterRunStatus.QUEUED, remote_job_origin=origin,
                              tags={BACKFILL_ID_TAG: "abcdefgh", GATE_TAG: GATE_HELD,
                                    COLLECT_FOR_TAG: collect_for(pipeline, month)})
    return run.run_id


def _gate(instance: dg.DagsterInstance, run_id: str) -> str | None:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.tags.get(GATE_TAG)


def test_the_projects_instance_holds_runs_and_an_instance_without_the_limit_does_not(
        instance: dg.DagsterInstance) -> None:
    assert gate_is_configured(instance)
    with dg.instance_for_test() as plain:
        assert not gate_is_configured(plain)


def test_a_collect_coming_due_releases_the_held_run_and_asks_for_no_second(instance: dg.DagsterInstance) -> None:
    held = _held_run(instance)
    assert release_held_collect(instance, "sentiment", MONTH) == (True, True)
    assert _gate(instance, held) == GATE_RELEASED
    # the released run is still queued: the next tick neither releases again nor launches another collect
    assert release_held_collect(instance, "sentiment", MONTH) == (False, True)
    assert release_held_collect(instance, "embeddings", MONTH) == (False, False)  # nothing held: launch as usual


def test_a_held_run_of_a_month_that_already_settled_is_released(instance: dg.DagsterInstance) -> None:
    """A collect launched in the instant between a backfill run's skip and its queueing of the held run leaves the
    month settled, and no collect will come due again: the sensor releases the held run all the same."""
    settled = _held_run(instance, "sentiment")
    still_waiting = _held_run(instance, "titles")
    released = release_settled(instance, lambda pipeline, month: pipeline == "sentiment")
    assert released == ["sentiment 2024-03"]
    assert (_gate(instance, settled), _gate(instance, still_waiting)) == (GATE_RELEASED, GATE_HELD)
