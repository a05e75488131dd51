"""OpenAI's error bodies, with its codes and wording, for everything the local engine refuses.

OpenAI answers ``{"error": {"message", "type", "param", "code"}}`` (``Error`` in its OpenAPI spec).
The sentences below follow the ones its API sends for the same faults, e.g. ``Missing required
parameter: 'input_file_id'.`` (``missing_required_parameter``), ``Invalid value: 'x'. Supported
values are: 'a' and 'b'.`` (``invalid_value``), ``No such File object: file-…`` (404, param ``id``),
``Invalid URL (GET /v1/…)`` (404); local hints are appended where a user needs to know what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

INVALID_REQUEST = "invalid_request_error"


def error_body(message: str, *, type_: str = INVALID_REQUEST, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    """A request the API answers with an error status and an OpenAI error body."""

    def __init__(self, status: int, message: str, *, type_: str = INVALID_REQUEST, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type_, self.param, self.code = status, type_, param, code

    def body(self) -> dict[str, Any]:
        return error_body(str(self), type_=self.type_, param=self.param, code=self.code)


class InvalidRequest(ApiError):
    """A request body OpenAI would answer with 400."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, message, param=param, code=code)


def _quoted_list(values: Sequence[Any]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) < 2:
        return "".join(quoted)
    return f"{', '.join(quoted[:-1])}{',' if len(quoted) > 2 else ''} and {quoted[-1]}"


def missing_parameter(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def invalid_value(param: str, value: Any, supported: Sequence[Any], hint: str = "") -> InvalidRequest:
    message = f"Invalid value: '{value}'. Supported values are: {_quoted_list(supported)}.{hint}"
    return InvalidRequest(message, param, "invalid_value")


_JSON_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a decimal number", str: "a string",
                    list: "an array", dict: "an object", type(None): "null"}


def invalid_type(param: str, expected: str, value: Any) -> InvalidRequest:
    got = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    return InvalidRequest(f"Invalid type for '{param}': expected {expected}, but got {got} instead.", param,
                          "invalid_type")


def below_minimum(param: str, minimum: int | float, value: Any, kind: str = "integer") -> InvalidRequest:
    """``kind`` is how OpenAI names the parameter's type: ``integer`` or ``decimal``."""
    return InvalidRequest(f"Invalid '{param}': {kind} below minimum value. Expected a value >= {minimum}, "
                          f"but got {value} instead.", param, f"{kind}_below_min_value")


def above_maximum(param: str, maximum: int | float, value: Any, kind: str = "integer") -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': {kind} above maximum value. Expected a value <= {maximum}, "
                          f"but got {value} instead.", param, f"{kind}_above_max_value")


def unsupported_parameter(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Unsupported parameter: '{param}' is not supported by the local engine: {why}", param,
                          "unsupported_parameter")


def invalid_id(param: str, value: Any, prefix: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': '{value}'. Expected an ID that begins with '{prefix}'.", param,
                          "invalid_value")


def bounded_int(body: dict[str, Any], param: str, low: int, high: int | None = None, *, where: str = "") -> int | None:
    """An optional integer parameter, refused in OpenAI's words when it has the wrong type or range."""
    value = body.get(param)
    if value is None:
        return None
    name = f"{where}{param}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(name, "an integer", value)
    if value < low:
        raise below_minimum(name, low, value)
    if high is not None and value > high:
        raise above_maximum(name, high, value)
    return value


def query_int(query: dict[str, Any], param: str, low: int, high: int) -> int | None:
    """An optional integer query-string parameter (e.g. ``limit``), refused in OpenAI's words."""
    raw = query.get(param)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise invalid_type(param, "an integer", raw) from None
    return bounded_int({param: value}, param, low, high)


def bounded_number(body: dict[str, Any], param: str, low: float, high: float) -> float | None:
    value = body.get(param)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_type(param, "a decimal", value)
    if value < low:
        raise below_minimum(param, low, value, "decimal")
    if value > high:
        raise above_maximum(param, high, value, "decimal")
    return float(value)
