"""Streams a multipart/form-data upload (`POST /v1/files`) to disk with python-multipart."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

CHUNK_BYTES = 1 << 20


class UploadError(ValueError):
    pass


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    file_bytes: int = 0


def receive_upload(content_type: str, body: BinaryIO, file_dest: Path) -> Upload:
    """Writes the part named `file` to file_dest as it arrives; other parts become text fields."""
    mime, params = parse_options_header(content_type)
    if mime != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError("expected a multipart/form-data body with a 'file' part and a 'purpose' field")
    upload = Upload()
    state: dict[str, object] = {"header_name": b"", "header_value": b"", "headers": {}, "field": None,
                                "chunks": []}
    handle = file_dest.open("wb")

    def on_part_begin() -> None:
        state.update(headers={}, field=None, chunks=[], header_name=b"", header_value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_name"] = state["header_name"] + data[start:end]  # type: ignore[operator]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] = state["header_value"] + data[start:end]  # type: ignore[operator]

    def on_header_end() -> None:
        headers = state["headers"]
        headers[bytes(state["header_name"]).lower()] = state["header_value"]  # type: ignore[index, call-overload]
        state.update(header_name=b"", header_value=b"")

    def on_headers_finished() -> None:
        disposition = state["headers"].get(b"content-disposition", b"")  # type: ignore[attr-defined]
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode()
        state["field"] = name
        if name == "file":
            upload.filename = options.get(b"filename", b"upload.jsonl").decode()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["field"] == "file":
            handle.write(data[start:end])
            upload.file_bytes += end - start
        else:
            state["chunks"].append(data[start:end])  # type: ignore[attr-defined]

    def on_part_end() -> None:
        name = state["field"]
        if name and name != "file":
            upload.fields[str(name)] = b"".join(state["chunks"]).decode()  # type: ignore[arg-type]

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        while chunk := body.read(CHUNK_BYTES):
            parser.write(chunk)
        parser.finalize()
    finally:
        handle.close()
    if upload.filename is None:
        file_dest.unlink(missing_ok=True)
        raise UploadError("the upload has no 'file' part")
    return upload
