"""Load tenants.yaml into a :class:`TenantSet`: every rule of the file format, checked at once.

Loading is pure: it reads the file and the environment, imports no tenant code (app modules are
found with ``importlib.util.find_spec``) and creates nothing on disk, so a bad file changes
nothing. Every problem is collected; :func:`load_tenants` raises one :class:`ConfigError` listing
them all, :func:`check_tenants` returns them (with warnings) for ``python -m dispatcher check``::

    tenant_set = load_tenants("tenants.yaml")
    for tenant in tenant_set.enabled:
        print(tenant.name, tenant.mount)     # "/acme", or ("globex.example.com",)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from . import rules
from .checker import Checker
from .problems import ConfigError, Problem
from .schema import Defaults, TenantsFile, salvage, validate
from .tenant import DEFAULT_METRICS_ALLOW, TenantSet
from .yamlfile import YamlDocument, parse_yaml, read_text

__all__ = ["check_tenants", "load_tenants"]


def load_tenants(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    instance_root: str | None = None,
    text: str | None = None,
) -> TenantSet:
    """Read and validate a tenants file; raise :class:`ConfigError` listing every problem.

    ``instance_root`` overrides the file's own (the test plugin puts tenants on temporary
    folders this way; ``{instance_path}`` in database URLs follows it). ``text``, if given, is
    read as if it were the file's content (``diff`` compares an earlier version this way).
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
    """Validate a tenants file; return the set (``None`` if any error) and all problems."""
    file = os.fspath(path)
    if text is None:
        text, unreadable = read_text(file)
        if text is None:
            return None, [unreadable] if unreadable is not None else []
    doc = parse_yaml(text, file, os.environ if environ is None else environ)
    tenant_set = _check(doc, os.path.dirname(os.path.abspath(file)), instance_root)
    # A problem in defaults is reported once, not once per tenant; then in file order.
    problems = sorted(dict.fromkeys(doc.problems), key=lambda p: p.line)
    errors = [p for p in problems if not p.warning]
    return (None if errors else tenant_set), problems


def _check(doc: YamlDocument, root: str, instance_root: str | None) -> TenantSet | None:
    """Apply every rule to a parsed file; problems go to ``doc``, the set is returned."""
    checker = Checker(doc, root, instance_root)
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
    raw_tenants = doc.data.get("tenants")
    top_level = {**doc.data, "tenants": None}
    # A broken top-level field is reported, then set aside so the tenants are still checked.
    top = validate(TenantsFile, top_level, (), doc) or salvage(
        TenantsFile, {"version": 1, **top_level}, (), doc
    )
    if top is None:
        return None
    defaults = top.defaults or Defaults()
    checker.broken_defaults = checker.broken_fields(("defaults",))
    if defaults.config and "SECRET_KEY" in defaults.config:
        doc.problem(
            ("defaults", "config", "SECRET_KEY"),
            "a SECRET_KEY in defaults would be shared by every tenant",
            "Remove it: each tenant gets its own key, generated into its instance "
            "folder, or set one per tenant in instance/<name>/config.py",
        )
    checker.owned_config(defaults.config, ("defaults", "config"))
    base_domain = checker.host(top.base_domain, ("base_domain",))
    allow = DEFAULT_METRICS_ALLOW if top.metrics is None else top.metrics.allow
    metrics_allow = checker.networks(list(allow), ("metrics", "allow"))
    server_names = None
    if top.server_names is not None:
        server_names = frozenset(
            h for i, n in enumerate(top.server_names) if (h := checker.host(n, ("server_names", i)))
        )
    if raw_tenants is not None and not isinstance(raw_tenants, dict):
        doc.problem(
            ("tenants",),
            "must be a mapping of tenant names to their settings",
            "Write one 'name:' line per tenant under 'tenants:'",
        )
        raw_tenants = None
    instance_root = instance_root or os.path.join(root, top.instance_root)
    tenants = [
        tenant
        for name, raw in (raw_tenants or {}).items()
        if (tenant := checker.tenant(name, raw, defaults, instance_root, base_domain))
    ]
    checker.check_clashes(server_names)
    checker.warn_yaml_booleans()
    if server_names is None and any(t.path is not None for t in tenants):
        doc.problem(
            ("server_names",),
            "path mounts answer on any Host header",
            "Set 'server_names: [app.example.com]' to the hosts they serve",
            line=doc.line(("tenants",)),
            warning=True,
        )
    return TenantSet(
        file=doc.file,
        tenants=tuple(tenants),
        base_domain=base_domain,
        server_names=server_names,
        proxy=top.proxy,
        instance_root=os.path.abspath(instance_root),
        create_databases=top.create_databases,
        control_database=_control_database(top.control_database, doc),
        idle_timeout=top.idle_timeout,
        max_live_apps=top.max_live_apps,
        metrics_allow=metrics_allow,
        warnings=tuple(p for p in doc.problems if p.warning),
        text=doc.text,
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
