"""Request bodies that differ in one string: built, validated and serialised once, then spliced per request.

A month's requests of one pipeline share everything but the item's text: the model, the parameters, the
system prompt, the answer schema. Building, validating and serialising a million near-identical dicts costs
more than tokenizing the texts; a :class:`BodyTemplate` serialises the body once with a hole where the text goes,
and each request's bytes are the template's around ``orjson.dumps(text)`` — the same bytes ``orjson.dumps`` gives
for the whole body, so body hashes do not change. :class:`Conversations` is how a pipeline says "these
messages, then one user message per item" without building a list of messages per item.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, overload

import orjson
import polars as pl

# Stands for the per-request string while the template is built; never in a request (a NUL is escaped by JSON).
HOLE: Final = "\x00batch_assets:hole\x00"
_HOLE_JSON: Final = orjson.dumps(HOLE)


class BodyTemplate:
    """A body with :data:`HOLE` in exactly one string value; :meth:`render` fills it."""

    __slots__ = ("body", "prefix", "prefix_sha256", "shared", "suffix")

    def __init__(self, body: Mapping[str, Any]) -> None:
        serialised = orjson.dumps(body)
        if serialised.count(_HOLE_JSON) != 1:
            raise ValueError("a body template needs the hole in exactly one string value")
        self.body = body
        self.prefix, self.suffix = serialised.split(_HOLE_JSON)
        self.prefix_sha256 = hashlib.sha256(self.prefix)  # copied per request: the prefix is hashed once
        # Top-level values every request shares (model, caps...): read per request without building anything.
        self.shared = {key: value for key, value in body.items() if not _holds_hole(value)}

    def render(self, value: str) -> bytes:
        """The body's JSON with ``value`` in the hole."""
        return b"".join((self.prefix, orjson.dumps(value), self.suffix))

    def sha256_hex(self, value_json: bytes) -> str:
        """The sha256 of the body with ``value_json`` (``orjson.dumps`` of the value) in the hole."""
        digest = self.prefix_sha256.copy()
        digest.update(value_json)
        digest.update(self.suffix)
        return digest.hexdigest()

    def materialize(self, value: str) -> dict[str, Any]:
        """The body as a dict with ``value`` in the hole (for readers of a request; writers use :meth:`render`)."""
        return _fill(self.body, value)


def _fill(node: Any, value: str) -> Any:
    if node == HOLE:
        return value
    if isinstance(node, Mapping):
        return {k: _fill(v, value) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_fill(v, value) for v in node]
    return node


class SplicedBody(Mapping[str, Any]):
    """A request body as a mapping without building it: top-level values the template shares (model, caps) are
    read from the template; the one holding the hole is built only when someone asks for it."""

    __slots__ = ("_template", "_value")

    def __init__(self, template: BodyTemplate, value: str) -> None:
        self._template = template
        self._value = value

    def __getitem__(self, key: str) -> Any:
        template = self._template
        if key in template.shared:
            return template.shared[key]
        return _fill(template.body[key], self._value)

    def get(self, key: str, default: Any = None) -> Any:
        template = self._template
        if key in template.shared:
            return template.shared[key]
        return _fill(template.body[key], self._value) if key in template.body else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._template.body)

    def __len__(self) -> int:
        return len(self._template.body)


def _holds_hole(node: Any) -> bool:
    if node == HOLE:
        return True
    if isinstance(node, Mapping):
        return any(_holds_hole(v) for v in node.values())
    if isinstance(node, list | tuple):
        return any(_holds_hole(v) for v in node)
    return False


@dataclass(frozen=True)
class DerivedTexts:
    """A text per row of ``rows``, made by ``build`` (rows -> a String Series) a slice at a time: a month of
    prompts made from its rows (a million metric reports, ~260 MB of text) is never in memory all at once."""

    rows: pl.DataFrame
    build: Callable[[pl.DataFrame], pl.Series]

    def __len__(self) -> int:
        return self.rows.height

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> DerivedTexts: ...

    def __getitem__(self, index: int | slice) -> str | DerivedTexts:
        if isinstance(index, slice):
            return DerivedTexts(self.rows[index], self.build)
        row = index + self.rows.height if index < 0 else index
        if not 0 <= row < self.rows.height:
            raise IndexError(f"text {index} of {self.rows.height}")
        return DerivedTexts(self.rows.slice(row, 1), self.build).series()[0]

    def series(self) -> pl.Series:
        """The texts of these rows, made now."""
        texts = self.build(self.rows)
        if texts.len() != self.rows.height:
            raise ValueError(f"the text builder made {texts.len()} texts for {self.rows.height} rows: make one "
                             "per row")
        return texts


@dataclass(frozen=True)
class Conversations(Sequence[list[dict[str, Any]]]):
    """Chat conversations that share their first messages (``head``, e.g. the system prompt) and end with one user
    message per item: ``user_prefix + user_texts[i]``. Indexing builds one conversation; slicing stays lazy."""

    head: tuple[Mapping[str, Any], ...]
    # A Series stays in Arrow memory (only a chunk at a time becomes str); DerivedTexts are made a chunk at a time.
    user_texts: Sequence[str] | pl.Series | DerivedTexts
    user_prefix: str = ""

    def __len__(self) -> int:
        return len(self.user_texts)

    @overload
    def __getitem__(self, index: int) -> list[dict[str, Any]]: ...

    @overload
    def __getitem__(self, index: slice) -> Conversations: ...

    def __getitem__(self, index: int | slice) -> list[dict[str, Any]] | Conversations:
        if isinstance(index, slice):
            return Conversations(self.head, self.user_texts[index], self.user_prefix)
        text = self.user_texts[index]
        return [*(dict(m) for m in self.head), {"role": "user", "content": self.user_prefix + text}]

    def user_contents(self) -> list[str]:
        """Each conversation's last (user) message."""
        prefix, texts = self.user_prefix, self.user_texts
        if isinstance(texts, DerivedTexts):
            texts = texts.series()
        if isinstance(texts, pl.Series):
            return (prefix + texts if prefix else texts).to_list()
        return [prefix + text for text in texts] if prefix else list(texts)


__all__ = ["HOLE", "BodyTemplate", "Conversations", "DerivedTexts", "SplicedBody"]
