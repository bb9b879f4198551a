"""The document's building blocks: schema values, parameters, headers, responses, operations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Json = dict[str, Any]


# --- schemas -------------------------------------------------------------------------------


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def string(*, nullable: bool = False, **extra: Any) -> Json:
    return {"type": ["string", "null"] if nullable else "string", **extra}


def integer(*, nullable: bool = False, **extra: Any) -> Json:
    return {"type": ["integer", "null"] if nullable else "integer", **extra}


def timestamp(*, nullable: bool = False) -> Json:
    return string(nullable=nullable, format="date-time")


def object_(properties: Mapping[str, Json], optional: Sequence[str] = ()) -> Json:
    """An object whose properties are all present, but those named in `optional`."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": dict(properties),
    }


# --- requests and responses ----------------------------------------------------------------


def json_content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def header(description: str, schema: Json | None = None, *, required: bool = False) -> Json:
    return {"description": description, "required": required, "schema": schema or string()}


def param(where: str, name: str, description: str, schema: Json, *, required: bool = False) -> Json:
    return {
        "name": name,
        "in": where,
        "description": description,
        "required": required or where == "path",
        "schema": schema,
    }


def response(
    description: str, content: Json | None = None, headers: Mapping[str, Json] | None = None
) -> Json:
    answer: Json = {"description": description}
    if headers:
        answer["headers"] = dict(headers)
    if content:
        answer["content"] = content
    return answer


# --- operations ----------------------------------------------------------------------------


def operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: Mapping[int, Json],
    *,
    description: str | None = None,
    parameters: Sequence[Json] = (),
    body: Json | None = None,
    public: bool = False,
) -> Json:
    spelled: Json = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if description:
        spelled["description"] = description
    if parameters:
        spelled["parameters"] = list(parameters)
    if body:
        spelled["requestBody"] = body
    spelled["responses"] = {str(status): responses[status] for status in sorted(responses)}
    if public:
        spelled["security"] = []  # the document's default is the bearer token
    return spelled
