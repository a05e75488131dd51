"""Streams a multipart/form-data upload (`POST /v1/files`) to disk with python-multipart.

The body is read chunk by chunk and the ``file`` part written as it arrives, so a big upload never
sits in memory. The size limit is checked on every chunk (reading stops the moment it is passed),
other fields can be checked as soon as they arrive, and whatever goes wrong — a malformed body, a
body cut short, an upload over the limit, a refused field — the partial file is deleted before the
error propagates: nothing is left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

CHUNK_BYTES = 1 << 20
MAX_FIELD_BYTES = 64 << 10  # text fields (purpose, expires_after[...]) are short


class UploadError(ValueError):
    """A body that is not a well-formed multipart/form-data upload (answered with 400)."""


class UploadTooLarge(UploadError):
    """The file part is larger than the limit (answered with 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than {limit} bytes")
        self.limit = limit


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    file_bytes: int = 0


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_name: bytes = b""
    header_value: bytes = b""
    name: str | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class ByteReader(Protocol):
    """What an upload is read from: a binary file or the local API's request body."""

    def read(self, size: int = -1, /) -> bytes: ...


def receive_upload(
    content_type: str,
    body: ByteReader,
    file_dest: Path,
    *,
    max_file_bytes: Callable[[dict[str, str]], int],
    on_field: Callable[[str, str], None] | None = None,
) -> Upload:
    """Writes the part named ``file`` to ``file_dest`` as it arrives; other parts become text fields.

    ``max_file_bytes(fields so far)`` is the size limit (it may depend on a field sent before the
    file, like ``purpose``); ``on_field(name, value)`` runs as each text field completes and may
    raise to refuse the upload at once. On any error ``file_dest`` is removed; so it is when the
    body has no ``file`` part (``filename`` is then None).
    """
    mime, params = parse_options_header(content_type)
    if mime != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError("expected a multipart/form-data body with a 'file' part and a 'purpose' field")
    upload = Upload()
    part = _Part()
    ended = False
    handle = file_dest.open("wb")

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_name += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part.header_value += data[start:end]

    def on_header_end() -> None:
        part.headers[part.header_name.lower()] = part.header_value
        part.header_name = part.header_value = b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = options.get(b"name", b"").decode(errors="replace")
        if part.name == "file":
            if upload.filename is not None:
                raise UploadError("the upload has more than one 'file' part")
            upload.filename = options.get(b"filename", b"upload").decode(errors="replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.name == "file":
            upload.file_bytes += end - start
            limit = max_file_bytes(upload.fields)
            if upload.file_bytes > limit:
                raise UploadTooLarge(limit)
            handle.write(data[start:end])
            return
        part.size += end - start
        if part.size > MAX_FIELD_BYTES:
            raise UploadError(f"the form field '{part.name}' is longer than {MAX_FIELD_BYTES} bytes")
        part.chunks.append(data[start:end])

    def on_part_end() -> None:
        if part.name and part.name != "file":
            value = b"".join(part.chunks).decode(errors="replace")
            upload.fields[part.name] = value
            if on_field is not None:
                on_field(part.name, value)

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end, "on_end": on_end,
    })
    try:
        try:
            while chunk := body.read(CHUNK_BYTES):
                parser.write(chunk)
            parser.finalize()
        except FormParserError as exc:
            raise UploadError(f"the multipart body is malformed ({exc})") from None
        finally:
            handle.close()
        if not ended:
            raise UploadError("the multipart body ends before its closing boundary")
    except BaseException:
        file_dest.unlink(missing_ok=True)
        raise
    if upload.filename is None:  # the caller says which parameter is missing
        file_dest.unlink(missing_ok=True)
    return upload
