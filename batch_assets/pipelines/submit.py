"""Submitting a month's plan: upload each request file and create its batch, never paying twice. No Dagster.

Every file's batch carries an idempotency key (pipeline, month, attempt, the file's sha256 and how many
times this file was deliberately resubmitted). Before a create the key is looked up in the ledger and at the
provider; a create is sent with the SDK's retries off, and when its response is lost (timeout, connection
error, 5xx) the key is looked up again before anything is sent twice. Submissions of one pipeline-month hold
its ledger lease, so two at once yield one set of batches.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import openai
from openai.types import Batch

from batch_assets.batching.client import BatchClient
from batch_assets.ledger.records import FileState, MonthState, PlanKind, PlanState, StoredFile, StoredPlan
from batch_assets.ledger.store import Ledger
from batch_assets.pipelines.plan import month_key
from batch_assets.pipelines.queue import reserve

IDEMPOTENCY_KEY = "batch_assets_key"
# A key is looked up among batches created since its file was first submitted, minus this margin (clock skew).
LOOKUP_MARGIN_SECONDS = 3600
# After a lost response, how often the key is looked up before the create is sent again (the provider's list
# may lag behind a create that just went through), and the pause before each look-up.
LOOKUP_PAUSES_SECONDS = (0.5, 2.0, 5.0)
CREATE_ATTEMPTS = 4
_LOST_RESPONSE = (openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError)


class SubmitError(RuntimeError):
    """A submission the provider refused; the message says what to do."""


@dataclass(frozen=True)
class SubmitOutcome:
    plans: tuple[StoredPlan, ...]
    batch_ids: tuple[str, ...]  # every batch of the month's open plans
    created: int  # batches this call created
    adopted: int  # batches an earlier (or concurrent, or crashed) call had created
    queued: int  # files waiting for their model's enqueued-token room (the batch sensor submits them)
    message: str


def idempotency_key(pipeline: str, month: str, attempt: int, file_sha256: str, tries: int) -> str:
    """Same pipeline, month, attempt and file content (and resubmission count) → same key."""
    text = f"{pipeline}|{month}|{attempt}|{file_sha256}|{tries}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def submit_month(client: BatchClient, ledger: Ledger, pipeline: str, month: date, *,
                 enqueued_token_limits: Mapping[str, int] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> SubmitOutcome:
    """Submits every file of the month's open plans that has no batch yet (holding the month's lease). A file
    whose model has no enqueued-token room waits as ``queued``."""
    key = month_key(month)
    limits = enqueued_token_limits or {}
    created = adopted = 0
    with ledger.month_lease(pipeline, key) as owner:
        for plan in ledger.plans(pipeline, key, states=(PlanState.PLANNED, PlanState.SUBMITTING,
                                                          PlanState.SUBMITTED)):
            waiting = ledger.files(plan_id=plan.plan_id, states=(FileState.PLANNED, FileState.SUBMITTING,
                                                                  FileState.QUEUED))
            if not waiting:
                continue
            if plan.state == PlanState.PLANNED:
                ledger.set_plan_state(plan.plan_id, PlanState.SUBMITTING)
            for stored in waiting:
                # A file left `submitting` by a run that died may have its batch: find it before anything else.
                if stored.state != FileState.SUBMITTING and not reserve(ledger, stored, limits):
                    continue
                was_created = _submit_file(client, ledger, plan, stored, sleep)
                created += was_created
                adopted += not was_created
                ledger.renew_lease(pipeline, key, owner)
            ledger.set_plan_state(plan.plan_id, PlanState.SUBMITTED)
            ledger.update_month(pipeline, key, state=MonthState.RETRYING if plan.kind == PlanKind.RETRY
                                else MonthState.WAITING)
        plans = ledger.plans(pipeline, key, states=(PlanState.SUBMITTED,))
        files = [f for p in plans for f in ledger.files(plan_id=p.plan_id)]
    batch_ids = tuple(f.batch_id for f in files if f.batch_id)
    queued = sum(f.state == FileState.QUEUED for f in files)
    if not plans:
        message = f"nothing to submit for {pipeline} {month:%Y-%m}: no plan is waiting"
    else:
        message = (f"{len(batch_ids)} batch(es) in flight for {pipeline} {month:%Y-%m}: {created} created now, "
                   f"{adopted} created earlier and adopted")
        if queued:
            message += (f"; {queued} file(s) queued until their model has enqueued-token room (the batch sensor "
                        "submits them)")
    return SubmitOutcome(tuple(plans), batch_ids, created, adopted, queued, message)


def _submit_file(client: BatchClient, ledger: Ledger, plan: StoredPlan, stored: StoredFile,
                 sleep: Callable[[float], None]) -> bool:
    """Makes sure this file has its batch; True if this call created it, False if it was already there."""
    tries = max(stored.tries, 1)
    key = idempotency_key(stored.pipeline, stored.month, stored.attempt, stored.sha256, tries)
    ledger.update_file(plan.plan_id, stored.sha256, state=FileState.SUBMITTING, idempotency_key=key, tries=tries)
    since = int(stored.created_at) - LOOKUP_MARGIN_SECONDS
    existing = _find(client, key, since)
    if existing is not None:
        _record(ledger, plan, stored, existing)
        return False
    file_id = stored.upload_file_id or _upload(client, ledger, plan, stored)
    metadata = {IDEMPOTENCY_KEY: key, "pipeline": stored.pipeline, "month": stored.month[:7],
                "attempt": str(stored.attempt), "plan": str(plan.plan_id), "file": stored.sha256[:16]}
    last_error: Exception | None = None
    for create_attempt in range(CREATE_ATTEMPTS):
        if create_attempt:
            sleep(min(30.0, 2.0 ** create_attempt))
        try:
            batch = client.create(file_id, stored.url, metadata=metadata, max_retries=0)
        except _LOST_RESPONSE as exc:
            # The create may have gone through with its response lost: look before sending it again.
            last_error = exc
            for pause in LOOKUP_PAUSES_SECONDS:
                sleep(pause)
                found = _find(client, key, since)
                if found is not None:
                    _record(ledger, plan, stored, found)
                    return False
            continue
        except openai.RateLimitError as exc:  # 429: refused before anything was created
            last_error = exc
            continue
        except openai.NotFoundError:  # the uploaded file is gone (expired or deleted): upload it again
            file_id = _upload(client, ledger, plan, stored)
            continue
        except openai.APIStatusError as exc:
            raise SubmitError(
                f"the provider refused the batch for {stored.path} ({exc.status_code}: {exc.message}); nothing "
                "was created for it. Fix the cause and materialize the month's batches again: files already "
                "submitted are adopted, not paid twice") from exc
        _record(ledger, plan, stored, batch)
        return True
    raise SubmitError(
        f"could not create the batch for {stored.path} after {CREATE_ATTEMPTS} tries ({last_error}); no batch with "
        f"its key {key} exists at the provider, so nothing was paid. Materialize the month's batches again later")


def _upload(client: BatchClient, ledger: Ledger, plan: StoredPlan, stored: StoredFile) -> str:
    uploaded = client.upload(_existing_path(stored))
    ledger.update_file(plan.plan_id, stored.sha256, upload_file_id=uploaded.id)
    return uploaded.id


def _existing_path(stored: StoredFile) -> Path:
    path = Path(stored.path)
    if not path.is_file():
        raise SubmitError(f"request file {path} of {stored.pipeline} {stored.month[:7]} (attempt {stored.attempt}) is "
                          "gone from disk; the ledger keeps files as submitted and never rewrites them: restore it, "
                          "or materialize the month's requests again to plan it anew")
    return path


def _record(ledger: Ledger, plan: StoredPlan, stored: StoredFile, batch: Batch) -> None:
    now = time.time()
    counts = batch.request_counts
    ledger.update_file(plan.plan_id, stored.sha256, state=FileState.SUBMITTED, batch_id=batch.id,
                       batch_status=batch.status, upload_file_id=batch.input_file_id, submitted_at=now,
                       progress_at=now, completed=counts.completed if counts else 0,
                       failed=counts.failed if counts else 0,
                       total=(counts.total if counts and counts.total else stored.n_requests))


def _find(client: BatchClient, key: str, since: int) -> Batch | None:
    found = client.find_batches_by_metadata(IDEMPOTENCY_KEY, key, created_after=since)
    return found[0] if found else None
