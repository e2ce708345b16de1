"""Input checking for the API: a JSON body or a query string against a small field table.

Hand-written on purpose (no schema library): a field is a parser that returns the clean value
or raises :class:`Invalid` with a sentence for the client. Every problem in a request is found
at once and raised as one :class:`ValidationError`, which :mod:`.problems` turns into a 422
problem document with an ``errors`` array::

    FIELDS = {"title": Field(text(200, blank=False), required=True), "done": Field(boolean)}
    values = validate(json_object(), FIELDS)          # {"title": "Milk", "done": False}
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

#: Turns a raw value into a clean one, or raises :class:`Invalid`.
Parser = Callable[[Any], Any]


class Invalid(ValueError):
    """What is wrong with one value, as a sentence addressed to the client."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field (or query parameter) and why."""

    field: str
    detail: str


class ValidationError(Exception):
    """Every invalid field of a request; answered with 422 and an ``errors`` array."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{e.field}: {e.detail}" for e in self.errors))


@dataclass(frozen=True, slots=True)
class Field:
    """How to read one field: its parser, and whether it must be present (except in PATCH)."""

    parse: Parser
    required: bool = False


def validate(
    data: Mapping[str, Any],
    fields: Mapping[str, Field],
    *,
    partial: bool = False,
    errors: Iterable[FieldError] = (),
) -> dict[str, Any]:
    """The clean values of ``data``'s fields; raise :class:`ValidationError` listing every
    unknown, missing (unless ``partial``) or invalid one, after any ``errors`` already found."""
    found = list(errors)
    known = ", ".join(sorted(fields))
    found += [
        FieldError(name, f"Unknown field; expected one of: {known}.")
        for name in data
        if name not in fields
    ]
    clean: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            if field.required and not partial:
                found.append(FieldError(name, "This field is required."))
            continue
        try:
            clean[name] = field.parse(data[name])
        except Invalid as e:
            found.append(FieldError(name, str(e)))
    if found:
        raise ValidationError(found)
    return clean


def validate_query(args: MultiDict[str, str], fields: Mapping[str, Field]) -> dict[str, Any]:
    """:func:`validate` for a query string, where a parameter given twice is an error too."""
    repeated = [
        FieldError(name, "Given more than once; give it once.")
        for name, values in args.lists()
        if len(values) > 1
    ]
    return validate(args.to_dict(), fields, errors=repeated)


def json_object() -> dict[str, Any]:
    """The request body as a JSON object: 415 unless sent as JSON, 400 if malformed."""
    if not request.is_json:
        raise UnsupportedMediaType("Send the body as JSON, with 'Content-Type: application/json'.")
    try:
        # NaN and Infinity are not JSON (RFC 8259), though Python's parser accepts them.
        data = json.loads(request.get_data(), parse_constant=_not_json)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, and _not_json's
        raise BadRequest(f"The request body is not valid JSON: {e}.") from None
    if not isinstance(data, dict):
        raise BadRequest(f"The request body must be a JSON object, not {json_type(data)}.")
    return data


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")


def json_type(value: object) -> str:
    """``value``'s JSON type with an article, for messages: "a string", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# -- parsers ------------------------------------------------------------------------------------


def text(max_length: int, *, blank: bool = True) -> Parser:
    """A string of at most ``max_length`` characters; with ``blank=False`` it is stripped and
    must not be empty."""

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"Must be a string, not {json_type(value)}.")
        string = value if blank else value.strip()
        if not string and not blank:
            raise Invalid("Must not be empty.")
        if len(string) > max_length:
            raise Invalid(f"Must be at most {max_length} characters long.")
        return string

    return parse


def boolean(value: Any) -> bool:
    """A JSON ``true`` or ``false`` (not ``1``, not ``"true"``)."""
    if not isinstance(value, bool):
        raise Invalid(f"Must be true or false, not {json_type(value)}.")
    return value


def boolean_text(value: str) -> bool:
    """``true`` or ``false`` in a query string."""
    if value not in ("true", "false"):
        raise Invalid("Must be true or false.")
    return value == "true"


def iso_date(value: Any) -> date:
    """A calendar date written ``YYYY-MM-DD`` (a string in JSON)."""
    # fromisoformat alone would also take "20260301" and "2026-W09-7".
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass  # the shape is right, the day is not (2026-02-30)
    raise Invalid("Must be a date written YYYY-MM-DD, such as 2026-03-01.")


def positive_int_text(value: str) -> int:
    """A whole number from 1 to 999999999 in a query string (larger ones overflow offsets)."""
    if not re.fullmatch(r"[0-9]{1,9}", value) or int(value) < 1:
        raise Invalid("Must be a whole number from 1 to 999999999.")
    return int(value)


def nullable(parse: Parser) -> Parser:
    """``parse``, except that ``null`` is accepted (and means "none")."""

    def parse_or_none(value: Any) -> Any:
        return None if value is None else parse(value)

    return parse_or_none
