"""The shape of tenants.yaml (schema version 1), checked with pydantic.

Pydantic checks types, required and unknown fields, and reports every error with its location;
:func:`validate` turns those locations back into file lines and writes messages an operator can
act on. Rules that span several fields live in :mod:`dispatcher.tenantentry` (a tenant's mount,
app and database) and :mod:`dispatcher.loader` (the top level); rules across tenants (shared
paths, hosts, databases) in :mod:`dispatcher.clashes`. Strict mode is on: ``path: 5`` or
``app: no`` are errors, not coerced.

::

    top = validate(TenantsFile, doc.data, (), doc)      # None if invalid; problems in doc
"""

from __future__ import annotations

import copy
import difflib
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from .problems import Path
from .tenant import DEFAULT_METRICS_ALLOW, DEFAULT_RETRY_AFTER
from .yamlfile import YamlDocument

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
Model = TypeVar("Model", bound=BaseModel)


class Proxy(BaseModel):
    """How many proxies to trust for each ``X-Forwarded-*`` header (werkzeug ``ProxyFix``)."""

    model_config = _STRICT
    x_for: int = Field(1, ge=0)
    x_proto: int = Field(1, ge=0)
    x_host: int = Field(0, ge=0)
    x_port: int = Field(0, ge=0)
    x_prefix: int = Field(0, ge=0)


class Maintenance(BaseModel):
    """``maintenance: {retry_after: N}``; ``maintenance: true`` means the default wait."""

    model_config = _STRICT
    retry_after: int = Field(DEFAULT_RETRY_AFTER, gt=0)


class Pool(BaseModel):
    """Connection pool of a tenant's (non-SQLite) database, per worker process.

    Small by default: with many tenants, every worker holds a pool for each, and the sum must
    stay under the database server's ``max_connections`` (``check`` warns when it does not).
    """

    model_config = _STRICT
    size: int = Field(2, ge=0)
    max_overflow: int = Field(3, ge=0)
    pre_ping: bool = True
    recycle: int = Field(1800, ge=-1)
    timeout: int = Field(10, gt=0)

    def engine_options(self) -> dict[str, Any]:
        """As ``SQLALCHEMY_ENGINE_OPTIONS``."""
        return {
            "pool_size": self.size,
            "max_overflow": self.max_overflow,
            "pool_pre_ping": self.pre_ping,
            "pool_recycle": self.recycle,
            "pool_timeout": self.timeout,
        }


class Limits(BaseModel):
    """``limits: {concurrent: N}``: at most N requests of the tenant in flight per worker."""

    model_config = _STRICT
    concurrent: int | None = Field(None, ge=1)


class Metrics(BaseModel):
    """``metrics: {allow: [CIDR, ...]}``: who may read ``/_dispatcher/metrics``.

    The networks are checked (and parsed) by the loader, which can say which one is wrong.
    """

    model_config = _STRICT
    allow: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS_ALLOW))


def _maintenance_flag(value: Any) -> Any:
    if value is True:
        return {}
    if value is False:
        return None
    return value


def _exactly_an_int(value: Any) -> Any:
    """``Literal[1]`` matches by equality, so ``True`` (YAML 1.1's ``yes``) and ``1.0`` would
    pass as version 1: refuse every value that is not an int."""
    if type(value) is not int:
        raise PydanticCustomError("literal_error", "Input should be 1", {"expected": "1"})
    return value


class TenantFields(BaseModel):
    """Fields a tenant may set, and (but for its mount) inherit from ``defaults``."""

    model_config = _STRICT
    app: str | None = None
    mount: Literal["path", "subdomain"] | None = None
    database: str | None = None
    lazy: bool | None = None
    enabled: bool | None = None
    maintenance: Annotated[Maintenance | None, BeforeValidator(_maintenance_flag)] = None
    pool: Pool | None = None
    limits: Limits | None = None
    config: dict[str, Any] | None = None


class Defaults(TenantFields):
    """``defaults:``, merged under every tenant."""


class Tenant(TenantFields):
    """One entry under ``tenants:``; a mount is its own, never inherited."""

    path: str | None = None
    subdomain: str | None = None
    hosts: list[str] | None = None


class TenantsFile(BaseModel):
    """The top level. ``tenants`` is checked entry by entry so one bad tenant hides no other."""

    model_config = _STRICT
    version: Annotated[Literal[1], BeforeValidator(_exactly_an_int)]
    base_domain: str | None = None
    instance_root: str = "instance"
    proxy: Proxy | None = None
    server_names: list[str] | None = None
    create_databases: bool = False
    control_database: str | None = None
    idle_timeout: int | None = Field(None, gt=0)
    max_live_apps: int | None = Field(None, gt=0)
    metrics: Metrics | None = None
    defaults: Defaults | None = None
    tenants: dict[Any, Any] | None


def validate(model: type[Model], data: Any, at: Path, doc: YamlDocument) -> Model | None:
    """Check ``data`` (found at ``at`` in ``doc``) against ``model``; ``None`` if invalid."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        for error in e.errors(include_url=False):
            _report(model, error, at, doc)
        return None


def salvage(
    model: type[Model], data: Any, at: Path, doc: YamlDocument, since: int = 0
) -> Model | None:
    """After :func:`validate` failed: drop what it reported and validate the rest, quietly.

    The best-effort result lets the loader go on checking everything else (other fields,
    clashes with other tenants), so every problem is reported in one run. ``since``: the
    number of problems before the failed validation (only the later ones are looked at, so
    checking many tenants with mistakes does not grow with the square of their number).
    """
    if not isinstance(data, dict):
        return None
    scratch = copy.deepcopy(data)
    for problem in doc.problems[since:]:
        if problem.path[: len(at)] == at:
            _delete(scratch, problem.path[len(at) :])
    _drop_deleted_items(scratch)
    try:
        return model.model_validate(scratch)
    except ValidationError:
        return None


def _delete(data: Any, path: Path) -> None:
    for part in path[:-1]:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return
    if path and isinstance(data, dict):
        data.pop(path[-1], None)
    elif path and isinstance(data, list) and isinstance(path[-1], int) and path[-1] < len(data):
        data[path[-1]] = _DELETED  # the other items keep their positions until all are marked


def _drop_deleted_items(data: Any) -> None:
    """Take the items :func:`_delete` marked out of their lists (``hosts: [a.com, 5]`` is
    checked as ``[a.com]``)."""
    values = data.values() if isinstance(data, dict) else data if isinstance(data, list) else ()
    for value in values:
        _drop_deleted_items(value)
    if isinstance(data, list):
        data[:] = [item for item in data if item is not _DELETED]


_DELETED: Any = object()


def _report(model: type[BaseModel], error: Any, at: Path, doc: YamlDocument) -> None:
    loc = tuple(error["loc"])
    kind = error["type"]
    if loc and loc[-1] == "[key]":  # a non-text key inside `config:` and the like
        loc = loc[:-1]
        kind = "key_type"
    path: Path = (*at, *loc)
    name = str(loc[-1]) if loc else ""
    if kind == "key_type":
        plain = doc.plain_scalars.get(path, name)
        doc.problem(path, f"key {plain} must be text", f"Quote it: '{plain}'")
    elif kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "it is not a field here"
        doc.problem(
            path,
            f"unknown field '{name}' ({hint})",
            "Fix the spelling or remove it; the fields here are: " + ", ".join(allowed),
        )
    elif kind == "missing":
        doc.problem(path, f"required field '{name}' is missing", f"Add '{name}:'")
    elif kind == "literal_error" and name == "version":
        shown = _show(error["input"]) or _yaml_type(error["input"])
        written = doc.plain_scalars.get(path)
        if written is not None and written != shown:  # `yes`, `on`, `~`: YAML 1.1 surprises
            shown = f"{written} (YAML reads it as {shown})"
        doc.problem(
            path,
            f"unsupported version {shown}",
            "This dispatcher reads 'version: 1' (the number 1, unquoted)",
        )
    elif kind == "literal_error":
        doc.problem(
            path,
            f"must be {error['ctx']['expected']}, not {error['input']!r}",
            "Use one of those values",
        )
    else:
        doc.problem(path, _describe(error, path, doc), _fix(kind))


_TYPE_NAMES = {
    "string_type": "text",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "list_type": "a list",
}


def _describe(error: Any, path: Path, doc: YamlDocument) -> str:
    kind = error["type"]
    if kind not in _TYPE_NAMES:
        return str(error["msg"]).replace("Input", "value").lower()
    got = error["input"]
    message = f"must be {_TYPE_NAMES[kind]}, not {_yaml_type(got)} {_show(got)}"
    plain = doc.plain_scalars.get(path)
    if kind == "string_type" and plain is not None:
        message += f" (YAML reads unquoted {plain} as {_show(got)}; quote it: '{plain}')"
    return message


def _fix(kind: str) -> str:
    if kind == "string_type":
        return "Write text, quoted if it could be read as a number or true/false"
    if kind in _TYPE_NAMES:
        return f"Write {_TYPE_NAMES[kind]}"
    return "Correct the value"


def _yaml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "text"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return ""
    return repr(value)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model found at ``loc`` inside ``model``."""
    for part in loc:
        info = model.model_fields.get(str(part))
        nested = _model_of(info.annotation) if info is not None else None
        if nested is None:
            break
        model = nested
    return list(model.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
