"""What a scalar's text means in tenants.yaml: YAML 1.1's types, the tags allowed, ``${VAR}``.

:mod:`dispatcher.yamlwalk` reads values from libyaml's events; this module says what a
scalar is. A plain scalar is resolved as PyYAML's ``SafeLoader`` does (YAML 1.1: ``no`` is
false, ``0700`` is 448, ``2024-01-31`` a date); an explicit tag is allowed only for those
types, never for Python objects, binary data or sets; ``${VAR}`` is expanded in text::

    resolve("0700")                     # "tag:yaml.org,2002:int"
    construct(resolve("0700"), "0700")  # 448
    expand("${HOME}/x", os.environ, missing.append)   # "/root/x"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from yaml.resolver import Resolver

YAML = "tag:yaml.org,2002:"
STR, MAP, SEQ = YAML + "str", YAML + "map", YAML + "seq"
#: The tags a scalar may carry explicitly (``!!str 5``); any other is a problem.
SCALAR_TAGS = frozenset(YAML + t for t in ("str", "int", "float", "bool", "null"))
#: What a value of each resolved type is, in a message.
KINDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "timestamp": "a date",
}

#: Plain-scalar resolution (YAML 1.1, as PyYAML's SafeLoader), by first character.
_RESOLVERS: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    key: list(rules) for key, rules in Resolver.yaml_implicit_resolvers.items() if key is not None
}
# ${VAR} or ${VAR:-default}; the default may hold {placeholders} (one level of braces).
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{[^{}]*\})*))?\}")
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def resolve(text: str) -> str | None:
    """The tag YAML 1.1 gives a plain scalar, ``None`` for text (the common case, fast)."""
    for tag, pattern in _RESOLVERS.get(text[:1], ()):
        if pattern.match(text):
            return tag
    return None


def shown_tag(tag: str) -> str:
    """``tag:yaml.org,2002:binary`` as it was written: ``!!binary``."""
    return "!!" + tag[len(YAML) :] if tag.startswith(YAML) else tag


def construct(tag: str, text: str) -> Any:
    """The value of a scalar resolved (or tagged) as a YAML 1.1 number, boolean, null or date.

    Raises :class:`ValueError` saying why if Python cannot convert it (``2024-02-30``, a
    number of 5,000 digits, ``!!int x``).
    """
    name = tag[len(YAML) :]
    if name in ("merge", "value", "yaml"):  # "<<", "=" as plain values: text
        return text
    try:
        if name == "int" and text.isdigit() and text.isascii() and text[0] != "0":
            return int(text)  # the common case, without PyYAML's general conversion
        if name == "bool":
            return _CONSTRUCTOR.bool_values[text.lower()]
        if name == "null":
            return None
        node = yaml.ScalarNode(tag, text)
        if name == "int":
            return _CONSTRUCTOR.construct_yaml_int(node)
        if name == "float":
            return _CONSTRUCTOR.construct_yaml_float(node)
        return _CONSTRUCTOR.construct_yaml_timestamp(node)
    except (ValueError, KeyError, TypeError) as e:
        kind = KINDS.get(name, f"!!{name}")
        reason = f" ({str(e).split(';')[0]})" if isinstance(e, ValueError) else ""
        message = f"YAML reads this value as {kind}, and it is not a valid one{reason}"
        raise ValueError(message) from None  # the reason is in the message


def expand(text: str, environ: Mapping[str, str], missing: Callable[[str], object]) -> str:
    """Fill in ``${VAR}`` and ``${VAR:-default}``; ``missing`` is told each unset name."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        missing(name)
        return ""

    return _ENV_VAR.sub(replace, text)
