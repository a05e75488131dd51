"""Names the Batch API protocol uses, in one place (endpoints, statuses, per-item outcomes)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal, get_args

# The one set of batch endpoints this project builds, parses and serves (OpenAI's Batch API also
# takes /v1/moderations, images and videos; nothing here uses them). Everything else derives from it.
Endpoint = Literal["/v1/embeddings", "/v1/chat/completions", "/v1/responses", "/v1/completions"]
SUPPORTED_URLS: Final[tuple[Endpoint, ...]] = get_args(Endpoint)
EMBEDDINGS_URL: Final = "/v1/embeddings"
CHAT_COMPLETIONS_URL: Final = "/v1/chat/completions"
RESPONSES_URL: Final = "/v1/responses"
COMPLETIONS_URL: Final = "/v1/completions"  # the legacy text completions endpoint
assert {EMBEDDINGS_URL, CHAT_COMPLETIONS_URL, RESPONSES_URL, COMPLETIONS_URL} == set(SUPPORTED_URLS)

COMPLETION_WINDOW: Final = "24h"



class BatchStatus(StrEnum):
    """A batch's status as OpenAI reports it."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


# A batch in one of these has ended: its output and error files are final.
TERMINAL_BATCH_STATUSES: Final = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})
ACTIVE_BATCH_STATUSES: Final = frozenset(BatchStatus) - TERMINAL_BATCH_STATUSES


class Outcome(StrEnum):
    """One final outcome per item of a batch."""

    SUCCEEDED = "succeeded"
    HTTP_ERROR = "http_error"  # the request's line carries an HTTP error status (429, 5xx, 4xx)
    EXPIRED = "expired"  # the batch expired before the request ran
    CANCELLED = "cancelled"  # the batch was cancelled before the request ran
    MISSING = "missing"  # no line for the request in the output or error file


# Non-HTTP per-item error codes written to the error file.
BATCH_EXPIRED_CODE: Final = "batch_expired"
BATCH_CANCELLED_CODE: Final = "batch_cancelled"

# Limits OpenAI documents for one batch input file.
MAX_REQUESTS_PER_FILE: Final = 50_000
MAX_FILE_BYTES: Final = 200_000_000  # "200 MB": read as decimal, the safe side of the limit
MAX_EMBEDDING_INPUTS_PER_BATCH: Final = 50_000
CUSTOM_ID_MAX_LEN: Final = 64
METADATA_MAX_PAIRS: Final = 16
METADATA_KEY_MAX_LEN: Final = 64
METADATA_VALUE_MAX_LEN: Final = 512
