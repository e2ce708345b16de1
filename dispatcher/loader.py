"""Load tenants.yaml into a :class:`~dispatcher.tenant.TenantSet`: every rule, checked at once.

The road from the file to each tenant's :class:`~dispatcher.tenant.TenantConfig`:
:func:`check_tenants` parses the file (:mod:`dispatcher.yamlfile`), checks the top-level fields
here (their shape in :mod:`dispatcher.schema`), reads each entry under ``tenants:`` with
:class:`~dispatcher.tenantentry.TenantEntries`, then reports what tenants share that they may
not (:mod:`dispatcher.clashes`).

Loading is pure: it reads the file and the environment, imports no tenant code (app modules are
found with ``importlib.util.find_spec``) and creates nothing on disk, so a bad file changes
nothing. Every problem is collected; :func:`load_tenants` raises one :class:`ConfigError` listing
them all, :func:`check_tenants` returns them (with warnings) for ``python -m dispatcher check``::

    tenant_set = load_tenants("tenants.yaml")
    for tenant in tenant_set.enabled:
        print(tenant.name, tenant.mount)     # "/acme", or ("globex.example.com",)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from . import rules
from .problems import ConfigError, Path, Problem
from .schema import Defaults, TenantsFile, salvage, validate
from .tenant import DEFAULT_METRICS_ALLOW, Network, TenantSet
from .tenantentry import TenantEntries, broken_fields, check_owned_config, checked_host
from .yamlfile import YamlDocument, parse_yaml, read_text

__all__ = ["check_tenants", "load_tenants"]

_YAML11_BOOLEANS = ("yes", "no", "on", "off")


def load_tenants(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    instance_root: str | None = None,
    text: str | None = None,
) -> TenantSet:
    """Read and validate a tenants file: the tenant set a dispatcher serves.

    Every rule of docs/tenants-yaml.md is checked and every mistake found is reported at once,
    each located by file and line. ``${VAR}`` and ``${VAR:-default}`` inside string values are
    expanded from ``environ``. The file's folder is put on ``sys.path``, so that an ``app:``
    such as ``tenants.notes`` resolves from any working directory; no tenant module is
    imported and nothing is created on disk. ::

        tenant_set = load_tenants("tenants.yaml")
        tenant_set["acme"].database_uri

    :param path: the tenants file. Relative folders inside it are taken from its folder.
    :param environ: where ``${VAR}`` is looked up; ``os.environ`` if ``None``.
    :param instance_root: overrides the file's own (the test plugin puts tenants on temporary
        folders this way; ``{instance_path}`` in database URLs follows it).
    :param text: read as if it were the file's content (``diff`` compares an earlier version
        this way); ``path`` then only names the file in messages and locates its folder.
    :return: the validated :class:`~dispatcher.tenant.TenantSet`. Warnings (risks such as an
        unquoted ``yes``, not mistakes) do not stop it; :func:`check_tenants` returns them.
    :raises dispatcher.ConfigError: the file cannot be read, is not valid YAML, or breaks a
        rule. ``str(error)`` lists every problem, one per line (``tenants.yaml:3: tenant
        'acme', field 'pth': unknown field 'pth' (did you mean 'path'?). Fix the spelling...``);
        ``error.problems`` holds them as :class:`~dispatcher.problems.Problem`.
    """
    tenant_set, problems = check_tenants(path, environ, instance_root=instance_root, text=text)
    errors = [p for p in problems if not p.warning]
    if tenant_set is None or errors:
        raise ConfigError(errors)
    return tenant_set


def check_tenants(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    instance_root: str | None = None,
    text: str | None = None,
) -> tuple[TenantSet | None, list[Problem]]:
    """Validate a tenants file without raising: the tenant set, and every problem found.

    The same rules as :func:`load_tenants` (which calls this), for a caller that reports the
    problems itself: ``python -m dispatcher check`` prints errors and warnings alike. ::

        tenant_set, problems = check_tenants("tenants.yaml")
        for problem in problems:
            print(problem)

    :param path: the tenants file, as for :func:`load_tenants`.
    :param environ: where ``${VAR}`` is looked up; ``os.environ`` if ``None``.
    :param instance_root: overrides the file's own, as for :func:`load_tenants`.
    :param text: read as if it were the file's content, as for :func:`load_tenants`.
    :return: ``(tenant_set, problems)``. ``tenant_set`` is ``None`` when any problem is an
        error (``problem.warning`` false); ``problems`` holds errors and warnings in file
        order, a problem in ``defaults`` once rather than once per tenant. A file that cannot
        be read is one problem and no set. Nothing is raised for a bad file.
    """
    file = os.fspath(path)
    if text is None:
        text, unreadable = read_text(file)
        if text is None:
            return None, [unreadable] if unreadable is not None else []
    doc = parse_yaml(text, file, os.environ if environ is None else environ)
    tenant_set = _read(doc, os.path.dirname(os.path.abspath(file)), instance_root)
    # A problem in defaults is reported once, not once per tenant; then in file order.
    problems = sorted(dict.fromkeys(doc.problems), key=lambda p: p.line)
    errors = [p for p in problems if not p.warning]
    return (None if errors else tenant_set), problems


def _read(doc: YamlDocument, root: str, instance_root: str | None) -> TenantSet | None:
    """Apply every rule to a parsed file; problems go to ``doc``, the set is returned."""
    reported = {p.path for p in doc.problems}  # while parsing: a missing ${VAR}, say
    top = _top_level(doc)
    if top is None:
        return None
    defaults = top.defaults or Defaults()
    broken_defaults = broken_fields(doc, ("defaults",))
    _check_defaults_config(doc, defaults)
    base_domain = checked_host(doc, top.base_domain, ("base_domain",))
    allow = DEFAULT_METRICS_ALLOW if top.metrics is None else top.metrics.allow
    metrics_allow = _networks(doc, list(allow), ("metrics", "allow"))
    server_names = _server_names(doc, top.server_names)
    raw_tenants = _tenant_entries(doc)
    instance_root = instance_root or os.path.join(root, top.instance_root)
    entries = TenantEntries(
        doc,
        root=root,
        instance_root=instance_root,
        defaults=defaults,
        base_domain=base_domain,
        server_names=server_names,
        broken_defaults=broken_defaults,
        reported=reported,
    )
    tenants = [t for name, raw in raw_tenants.items() if (t := entries.read(name, raw))]
    entries.clashes.report()
    _warn_yaml_booleans(doc)
    if server_names is None and any(t.path is not None for t in tenants):
        _warn_path_mounts_on_any_host(doc)
    control_database = _control_database(top.control_database, doc)
    return TenantSet(
        file=doc.file,
        tenants=tuple(tenants),
        base_domain=base_domain,
        server_names=server_names,
        proxy=top.proxy,
        instance_root=os.path.abspath(instance_root),
        create_databases=top.create_databases,
        control_database=control_database,
        idle_timeout=top.idle_timeout,
        max_live_apps=top.max_live_apps,
        metrics_allow=metrics_allow,
        warnings=tuple(p for p in doc.problems if p.warning),
        text=doc.text,
    )


def _top_level(doc: YamlDocument) -> TenantsFile | None:
    """The top-level fields, ``tenants`` aside (its entries are read one by one); a broken
    field is reported, then set aside so that the tenants are still checked."""
    if doc.data is None and doc.problems:
        return None
    if not isinstance(doc.data, dict):
        doc.problem(
            (),
            "the file must be a mapping with 'version: 1' and 'tenants:'",
            "See docs/tenants-yaml.md for an example",
        )
        return None
    if "tenants" not in doc.data:
        doc.problem(("tenants",), "required field 'tenants' is missing", "Add 'tenants:'")
    top_level = {**doc.data, "tenants": None}
    return validate(TenantsFile, top_level, (), doc) or salvage(
        TenantsFile, {"version": 1, **top_level}, (), doc
    )


def _check_defaults_config(doc: YamlDocument, defaults: Defaults) -> None:
    """``defaults.config`` is every tenant's: no SECRET_KEY, no database settings."""
    if defaults.config and "SECRET_KEY" in defaults.config:
        doc.problem(
            ("defaults", "config", "SECRET_KEY"),
            "a SECRET_KEY in defaults would be shared by every tenant",
            "Remove it: each tenant gets its own key, generated into its instance "
            "folder, or set one per tenant in instance/<name>/config.py",
        )
    check_owned_config(doc, defaults.config, ("defaults", "config"))


def _networks(doc: YamlDocument, values: list[str], at: Path) -> tuple[Network, ...]:
    """``metrics.allow``: each entry a network (``10.0.0.0/8``) or one address (``::1``)."""
    networks = []
    for i, value in enumerate(values):
        try:
            networks.append(ipaddress.ip_network(value))
        except ValueError:
            loose = _loose_network(value)
            if loose is not None:
                doc.problem((*at, i), f"'{value}' has host bits set", f"Write '{loose}'")
            else:
                doc.problem(
                    (*at, i),
                    f"'{value}' is not an IP network or address",
                    "Write a network such as '10.0.0.0/8', or one address such as '::1'",
                )
    return tuple(networks)


def _loose_network(value: str) -> str | None:
    """``10.1.2.3/8`` -> ``10.0.0.0/8``: what an entry with host bits set probably meant."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return None


def _server_names(doc: YamlDocument, names: list[str] | None) -> frozenset[str] | None:
    """The valid hosts of ``server_names``; ``None`` if it is not set (any host)."""
    if names is None:
        return None
    return frozenset(
        host
        for i, name in enumerate(names)
        if (host := checked_host(doc, name, ("server_names", i)))
    )


def _tenant_entries(doc: YamlDocument) -> dict[Any, Any]:
    """The entries under ``tenants:`` (none if it is missing or not a mapping)."""
    raw_tenants = doc.data.get("tenants")
    if raw_tenants is not None and not isinstance(raw_tenants, dict):
        doc.problem(
            ("tenants",),
            "must be a mapping of tenant names to their settings",
            "Write one 'name:' line per tenant under 'tenants:'",
        )
        return {}
    return raw_tenants or {}


def _warn_path_mounts_on_any_host(doc: YamlDocument) -> None:
    """Without ``server_names``, a path tenant answers whatever Host a client sends."""
    doc.problem(
        ("server_names",),
        "path mounts answer on any Host header",
        "Set 'server_names: [app.example.com]' to the hosts they serve",
        line=doc.line(("tenants",)),
        warning=True,
    )


def _warn_yaml_booleans(doc: YamlDocument) -> None:
    """``SITE_NAME: no`` in a config is legal YAML for ``False``, and rarely meant."""
    for path, text in doc.plain_scalars.items():
        in_config = (
            path[1:2] == ("config",)
            if path[:1] == ("defaults",)
            else (path[:1] == ("tenants",) and path[2:3] == ("config",))
        )
        if in_config and text.lower() in _YAML11_BOOLEANS:
            value = "true" if text.lower() in ("yes", "on") else "false"
            doc.problem(
                path,
                f"YAML reads unquoted {text} as {value}",
                f"Quote it ('{text}') if you meant text, or write {value}",
                warning=True,
            )


def _control_database(url: str | None, doc: YamlDocument) -> str | None:
    """``control_database:`` must be a PostgreSQL URL (holds and locks are PostgreSQL's)."""
    if url is None:
        return None
    parsed = rules.parse_database_url(url)
    if parsed is None or parsed.get_backend_name() != "postgresql" or not parsed.database:
        doc.problem(
            ("control_database",),
            "must be a PostgreSQL database URL",
            "Write 'postgresql://user@host/dispatcher' (the database must exist; every node "
            "reaches it directly, not through PgBouncer in transaction mode)",
        )
        return None
    return rules.with_default_driver(parsed).render_as_string(hide_password=False)
