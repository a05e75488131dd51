"""Months and deterministic numbers, shared by the document and metrics sources."""

from __future__ import annotations

import hashlib
from datetime import date, datetime


class SourceError(ValueError):
    """Input documents or metrics that cannot be used as they are; the message says what to change."""


def month_start(value: str | date | datetime) -> date:
    """The first day of the month of "2024-03", "2024-03-01" (any day), a date or a datetime."""
    if isinstance(value, date):  # datetime too
        return date(value.year, value.month, 1)
    if isinstance(value, str):
        text = value.strip()
        for fmt in ("%Y-%m", "%Y-%m-%d"):
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return date(parsed.year, parsed.month, 1)
    raise SourceError(f"a month must look like '2024-03' or '2024-03-01' (or be a date); got {value!r}")


def month_index(month: date) -> int:
    return month.year * 12 + month.month - 1


def month_from_index(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def unit_interval(text: str) -> float:
    """A deterministic number in [0, 1) from a string."""
    return hash64(text) / 2**64
