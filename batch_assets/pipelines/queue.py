"""The enqueued-token queue: files wait in the ledger until their model has room. No Dagster.

OpenAI limits the input tokens a model may have enqueued across an organisation's batches; a batch over it
is created and then fails with ``token_limit_exceeded``. Here every file, whatever its pipeline, month or
backfill, takes room from one count per model (the input tokens of its files submitted and not ended) before
it is created; a file that does not fit waits as ``queued`` and the batch sensor submits it when room frees.
A batch that fails with ``token_limit_exceeded`` anyway (another tool shares the organisation) is queued again,
never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

from batch_assets.batching.pricing import resolve_price_model
from batch_assets.batching.queue_limits import limit_for
from batch_assets.ledger.records import FileState, StoredFile
from batch_assets.ledger.store import Ledger

TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"
_HOLDING = (FileState.SUBMITTING, FileState.SUBMITTED)  # files whose tokens count as enqueued


def limit_key(model: str, limits: Mapping[str, int]) -> str | None:
    """The name the model's limit is kept under (a snapshot shares its base model's), None if it has none."""
    if model in limits:
        return model
    base = resolve_price_model(model)
    return base if base in limits else None


def enqueued_tokens(ledger: Ledger, limits: Mapping[str, int]) -> dict[str, int]:
    """Input tokens enqueued now per limit key (files being created or running at the provider)."""
    totals: dict[str, int] = {}
    for stored in ledger.files(states=_HOLDING):
        key = limit_key(stored.model, limits)
        if key is not None:
            totals[key] = totals.get(key, 0) + stored.input_tokens
    return totals


def fits(stored: StoredFile, limits: Mapping[str, int], enqueued: Mapping[str, int]) -> bool:
    """Whether the file may be created now. A file alone over the limit is let through when nothing else is
    enqueued (the request files are split under the limit, so that only happens when the limit was lowered)."""
    key = limit_key(stored.model, limits)
    if key is None:
        return True
    limit = limit_for(stored.model, limits) or 0
    used = enqueued.get(key, 0)
    return used == 0 or used + stored.input_tokens <= limit


def reserve(ledger: Ledger, stored: StoredFile, limits: Mapping[str, int]) -> bool:
    """Takes room for the file (marking it ``submitting``) if its model has it; False leaves it ``queued``."""
    key = limit_key(stored.model, limits)
    if key is None:
        ledger.update_file(stored.plan_id, stored.sha256, state=FileState.SUBMITTING)
        return True
    with ledger.named_lease(f"enqueued-tokens:{key}"):
        if not fits(stored, limits, enqueued_tokens(ledger, limits)):
            ledger.update_file(stored.plan_id, stored.sha256, state=FileState.QUEUED)
            return False
        ledger.update_file(stored.plan_id, stored.sha256, state=FileState.SUBMITTING)
        return True
