"""Names the Batch API protocol uses, in one place (endpoints, statuses, per-item outcomes)."""

from __future__ import annotations

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

# Batch statuses as OpenAI reports them.
BATCH_STATUSES: Final = (
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled",
)
TERMINAL_BATCH_STATUSES: Final = frozenset({"failed", "completed", "expired", "cancelled"})

# One final outcome per item of a batch.
Outcome = Literal["succeeded", "http_error", "expired", "cancelled", "missing"]
OUTCOMES: Final = ("succeeded", "http_error", "expired", "cancelled", "missing")
# Outcomes worth a new attempt: transient HTTP failures are judged by status code (see is_retryable_status).
RETRYABLE_OUTCOMES: Final = frozenset({"expired", "cancelled", "missing"})

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


def is_retryable_status(status_code: int | None) -> bool:
    """429 and 5xx lines are worth resubmitting; other 4xx lines would fail the same way again."""
    return status_code is not None and (status_code == 429 or status_code >= 500)
