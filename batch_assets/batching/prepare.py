"""Request builders: a month's rows to :class:`~batch_assets.batching.request_files.PreparedRequest` lines with exact
input-token counts, produced lazily in chunks for :func:`~batch_assets.batching.request_files.plan_request_files`.

Bodies that differ only in the item's text (embeddings, a Responses text input, :class:`Conversations`) are built
from a :class:`~batch_assets.batching.templates.BodyTemplate` and handed over as template chunks; token counts
of the next chunks are counted in child processes while this one is written (:mod:`batch_assets.batching.forked`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from typing import Any, Final, TypeVar

from batch_assets.batching.encodings import count_text_tokens, encoding_for_model
from batch_assets.batching.forked import CountedChunks
from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, EMBEDDINGS_URL, RESPONSES_URL
from batch_assets.batching.request_files import ChunkedRequests, PreparedRequest, TemplateChunk
from batch_assets.batching.requests import chat_body, custom_ids_for, embedding_body, responses_body
from batch_assets.batching.templates import HOLE, BodyTemplate, Conversations, SplicedBody
from batch_assets.batching.tokens import count_chat_tokens, count_responses_tokens

_PREPARE_CHUNK: Final = 65_536
_COUNTED_AHEAD: Final = 2  # chunks counted while one is written: two children keep both cores busy while we wait
_Chunk = TypeVar("_Chunk", bound=Sized)


def _check_lengths(ids: Sequence[str], values: Sequence[Any], what: str) -> None:
    if len(ids) != len(values):
        raise ValueError(f"got {len(ids)} ids but {len(values)} {what}")


def _counting_threads(num_threads: int | None) -> int:
    """Threads that count one chunk: one unless asked (the chunks ahead are counted in parallel, see
    :mod:`batch_assets.batching.forked`)."""
    return 1 if num_threads is None else num_threads


def _counted_chunks(n: int, chunk_at: Callable[[int], _Chunk], count: Callable[[_Chunk], list[int]]
                    ) -> Iterator[tuple[int, _Chunk, list[int]]]:
    """The n items in chunks (start, chunk, token counts). The chunks after the one the caller writes are counted
    meanwhile in child processes (:mod:`batch_assets.batching.forked`), so counting and writing use two cores."""
    chunks = CountedChunks(n, _PREPARE_CHUNK, chunk_at, count, _COUNTED_AHEAD)
    try:
        yield from chunks
    finally:
        chunks.close()


def prepare_embedding_requests(
    ids: Sequence[str],
    texts: Sequence[str],
    model: str,
    *,
    dimensions: int | None = None,
    custom_id_prefix: str = "",
    num_threads: int | None = None,
) -> ChunkedRequests:
    """Embedding requests for ``(id, text)`` rows, one text per request, tokens counted exactly.

    Ids, custom ids and empty texts are checked now; the requests are produced lazily, in chunks
    (the next chunk counted in ``num_threads`` threads, default one, while this one is written), so they stream
    into :func:`write_request_files`.
    """
    _check_lengths(ids, texts, "texts")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise ValueError(
                f"text of item {ids[i]!r} is empty: OpenAI rejects empty embedding inputs; "
                "drop or replace empty documents first"
            )
    custom_ids = custom_ids_for(ids, custom_id_prefix)
    template = BodyTemplate(embedding_body(model, HOLE, dimensions))  # validates model and dimensions once
    encoding_for_model(model)  # loaded here once, not in every child that counts a chunk

    def generate() -> Iterator[TemplateChunk]:
        for start, chunk, counts in _counted_chunks(
                len(texts), lambda at: list(texts[at : at + _PREPARE_CHUNK]),
                lambda chunk: count_text_tokens(chunk, model, num_threads=_counting_threads(num_threads))):
            yield TemplateChunk(EMBEDDINGS_URL, model, template, list(custom_ids[start : start + _PREPARE_CHUNK]),
                                list(ids[start : start + _PREPARE_CHUNK]), chunk, counts)

    return ChunkedRequests(generate)


def prepare_chat_requests(
    ids: Sequence[str],
    messages_list: Sequence[Sequence[Mapping[str, Any]]],
    model: str,
    *,
    custom_id_prefix: str = "",
    num_threads: int | None = None,
    **params: Any,
) -> ChunkedRequests:
    """Chat requests for ``(id, messages)`` rows; ``params`` go to :func:`chat_body`
    (max_tokens, max_completion_tokens, temperature, seed, response_format). Lazy like
    :func:`prepare_embedding_requests`; ids and custom ids are checked now, bodies as they are built.

    Given :class:`~batch_assets.batching.templates.Conversations` (shared first messages, one user message per
    item), the body is built, checked and serialised once and each request only adds its text: what the shipped
    chat pipelines pass.
    """
    _check_lengths(ids, messages_list, "conversations")
    custom_ids = custom_ids_for(ids, custom_id_prefix)
    if isinstance(messages_list, Conversations):
        return _shared_head_chat_requests(ids, custom_ids, messages_list, model, num_threads, params)
    chat_body(model, [{"role": "user", "content": "x"}], **params)  # validates params once
    encoding_for_model(model)  # loaded here once, not in every child that counts a chunk

    def generate() -> Iterator[list[PreparedRequest]]:
        for start, chunk, counts in _counted_chunks(
                len(messages_list), lambda at: messages_list[at : at + _PREPARE_CHUNK],
                lambda chunk: count_chat_tokens(chunk, model, num_threads=_counting_threads(num_threads),
                                                response_format=params.get("response_format"),
                                                tools=params.get("tools"))):
            yield [PreparedRequest(cid, CHAT_COMPLETIONS_URL, model, chat_body(model, messages, **params), tokens, 1,
                                   item_id)
                   for item_id, cid, messages, tokens in zip(ids[start : start + _PREPARE_CHUNK],
                                                             custom_ids[start : start + _PREPARE_CHUNK], chunk, counts,
                                                             strict=True)]

    return ChunkedRequests(generate)


def _shared_head_chat_requests(ids: Sequence[str], custom_ids: Sequence[str], conversations: Conversations,
                               model: str, num_threads: int | None, params: Mapping[str, Any]) -> ChunkedRequests:
    """Chat requests whose conversations differ only in their last user message (see prepare_chat_requests)."""
    last = {"role": "user", "content": HOLE}
    template = BodyTemplate(chat_body(model, [*conversations.head, last], **params))  # checks head and params once
    # Tokens of all but the user's text, by the same formula: the empty text has no tokens.
    fixed = count_chat_tokens([[*conversations.head, {**last, "content": ""}]], model,
                              response_format=params.get("response_format"), tools=params.get("tools"))[0]

    def contents_at(start: int) -> list[str]:
        contents = conversations[start : start + _PREPARE_CHUNK].user_contents()
        for i, content in enumerate(contents):
            if not isinstance(content, str):
                raise ValueError(f"conversation {start + i}: the user message must be a str, got "
                                 f"{type(content).__name__}")
        return contents

    def generate() -> Iterator[TemplateChunk]:
        for start, contents, counts in _counted_chunks(
                len(conversations), contents_at,
                lambda chunk: count_text_tokens(chunk, model, num_threads=_counting_threads(num_threads))):
            yield TemplateChunk(CHAT_COMPLETIONS_URL, model, template,
                                list(custom_ids[start : start + _PREPARE_CHUNK]),
                                list(ids[start : start + _PREPARE_CHUNK]), contents, [fixed + n for n in counts])

    return ChunkedRequests(generate)


def prepare_responses_requests(
    ids: Sequence[str],
    inputs: Sequence[str | Sequence[Mapping[str, Any]]],
    model: str,
    *,
    instructions: str | None = None,
    custom_id_prefix: str = "",
    num_threads: int | None = None,
    **params: Any,
) -> ChunkedRequests:
    """Responses API requests for ``(id, input)`` rows; ``input`` is a text or a list of messages,
    ``instructions`` the system prompt they share, ``params`` go to :func:`responses_body`
    (max_output_tokens, temperature, text_format). Tokens are counted as in
    :func:`~batch_assets.batching.tokens.count_responses_tokens`. Lazy like
    :func:`prepare_chat_requests`; ids, custom ids and params are checked now, bodies as they are built.
    """
    _check_lengths(ids, inputs, "inputs")
    custom_ids = custom_ids_for(ids, custom_id_prefix)
    # Checks params once; a text input is spliced into this body (a list of messages is built per request).
    template = BodyTemplate(responses_body(model, HOLE, instructions=instructions, **params))
    text_format = params.get("text_format")
    # Tokens of all but the text, by the same formula: the empty text has no tokens.
    fixed = count_responses_tokens([""], model, instructions=instructions, text_format=text_format)[0]

    def count(chunk: Sequence[str | Sequence[Mapping[str, Any]]]) -> list[int]:
        texts = [input_ for input_ in chunk if isinstance(input_, str) and input_]
        if len(texts) == len(chunk):
            return [fixed + n for n in count_text_tokens(texts, model, num_threads=_counting_threads(num_threads))]
        return count_responses_tokens(chunk, model, instructions=instructions, text_format=text_format,
                                      num_threads=_counting_threads(num_threads))

    def generate() -> Iterator[TemplateChunk | list[PreparedRequest]]:
        for start, chunk, counts in _counted_chunks(len(inputs), lambda at: inputs[at : at + _PREPARE_CHUNK], count):
            chunk_ids, chunk_cids = ids[start : start + _PREPARE_CHUNK], custom_ids[start : start + _PREPARE_CHUNK]
            texts = [input_ for input_ in chunk if isinstance(input_, str) and input_]
            if len(texts) == len(chunk):
                yield TemplateChunk(RESPONSES_URL, model, template, list(chunk_cids), list(chunk_ids), texts, counts)
                continue
            yield [PreparedRequest(cid, RESPONSES_URL, model, SplicedBody(template, input_), tokens, 1, item_id,
                                   template.render(input_)) if isinstance(input_, str) and input_ else
                   PreparedRequest(cid, RESPONSES_URL, model,
                                   responses_body(model, input_, instructions=instructions, **params), tokens, 1,
                                   item_id)
                   for item_id, cid, input_, tokens in zip(chunk_ids, chunk_cids, chunk, counts, strict=True)]

    return ChunkedRequests(generate)


__all__ = ["prepare_chat_requests", "prepare_embedding_requests", "prepare_responses_requests"]
