"""Which tenants a test runs for: the tenants file, ``--tenant`` and the two markers.

Kept apart from the hooks in ``__init__.py`` because choosing tenants is a question of its own
(the file, the options, the markers and their mistakes), answered once while tests are
collected, before any folder or database exists. The hooks ask it::

    state = config.stash[STATE]                     # made by pytest_configure
    tenant_set = state.load()                       # None, and state.errors, if unusable
    names = state.select(metafunc.definition, tenant_set)

Mistakes (an unknown tenant, a marker typo) are gathered in ``State.errors`` rather than
raised, so that one usage error lists them all (docs/testing.md, "Choosing tenants").
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

import pytest

from ..loader import load_tenants
from ..problems import ConfigError
from ..tenant import TenantConfig, TenantSet

#: Tenants are loaded onto this root and moved onto temporary folders test by test, so that
#: nothing can ever be created in the real instance/ (it is never created here either).
UNPLACED_ROOT = os.path.join(os.sep, "dispatcher-testing-unplaced")
#: What ``tenant`` is parametrized with when markers and ``--tenant`` leave a test no tenant:
#: such items are deselected before the run.
UNSELECTED = object()
MARKERS = {
    "tenants": "tenants(*names): run this test only for the named tenants (dispatcher.testing)",
    "tenant_app": "tenant_app(*import_paths): run this test only for the tenants whose app is "
    "one of these ('package.module' or 'package.module:factory') (dispatcher.testing)",
    "fresh_app": "fresh_app: give this test a newly built app rather than the tenant's reused "
    "one, for apps that keep state in memory (caches, rate limits) (dispatcher.testing)",
}


class State:
    """The session's tenants file, loaded at most once, and the usage errors found so far."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.loaded = False
        self.tenant_set: TenantSet | None = None
        self.errors: list[str] = []

    def error(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)

    def load(self) -> TenantSet | None:
        """The tenants file on unplaced folders; ``None`` (and an error) if unusable."""
        if self.loaded:
            return self.tenant_set
        self.loaded = True
        path = tenants_file(self.config)
        if not path.is_file():
            self.error(
                f"dispatcher.testing: tenants file {path} not found. Pass --tenants-file PATH "
                "or set $TENANTS_FILE"
            )
            return None
        try:
            self.tenant_set = load_tenants(path, instance_root=UNPLACED_ROOT)
        except ConfigError as e:
            self.error(f"dispatcher.testing: {path} cannot be used:\n{e}")
            return None
        for name in self.config.getoption("dispatcher_tenants"):
            problem = _unknown_tenant(name, self.tenant_set)
            if problem:
                self.error(f"dispatcher.testing: --tenant {name}: {problem}")
        return self.tenant_set

    def select(self, definition: pytest.Function, tenant_set: TenantSet) -> list[str]:
        """The enabled tenants this test runs for, after ``--tenant`` and its markers."""
        only = self.config.getoption("dispatcher_tenants")
        chosen = [t for t in tenant_set.enabled if not only or t.name in only]
        names = self.marker_args(definition, "tenants")
        if names is not None:
            for name in names:
                problem = _unknown_tenant(name, tenant_set, disabled_ok=True)
                if problem:
                    self.error(f"{definition.nodeid}: @pytest.mark.tenants: {problem}")
            chosen = [t for t in chosen if t.name in names]
        paths = self.marker_args(definition, "tenant_app")
        if paths is not None:
            for path in paths:
                problem = _unknown_app(path)
                if problem:
                    self.error(f"{definition.nodeid}: @pytest.mark.tenant_app: {problem}")
            chosen = [t for t in chosen if any(_runs(t, path) for path in paths)]
        return [t.name for t in chosen]

    def marker_args(self, definition: pytest.Function, name: str) -> tuple[str, ...] | None:
        """The closest ``name`` marker's arguments, checked; ``None`` if it has none."""
        marker = definition.get_closest_marker(name)
        if marker is None:
            return None
        if marker.kwargs or not marker.args or not all(isinstance(a, str) for a in marker.args):
            self.error(
                f"{definition.nodeid}: @pytest.mark.{name}: expected "
                f"{MARKERS[name].partition(':')[0]}, each a string; got {marker.args!r}"
                + (f" {marker.kwargs!r}" if marker.kwargs else "")
            )
            return ()
        return marker.args


#: The session's :class:`State`, in ``config.stash``.
STATE = pytest.StashKey[State]()


def tenants_file(config: pytest.Config) -> Path:
    """``--tenants-file``, else ``$TENANTS_FILE`` (both from the current directory), else
    the rootdir's tenants.yaml: the same file whichever folder pytest is started from."""
    given: str | None = config.getoption("dispatcher_tenants_file") or os.environ.get(
        "TENANTS_FILE"
    )
    if given:
        return config.invocation_params.dir / given
    return config.rootpath / "tenants.yaml"


def parametrized_by_test(metafunc: pytest.Metafunc) -> bool:
    """A test that parametrizes an argument named ``tenant`` itself is left alone."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        argnames = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(argnames, str):
            argnames = [n.strip() for n in argnames.split(",")]
        if "tenant" in argnames:
            return True
    return False


def tenant_param(item: pytest.Item) -> object:
    """What the item's ``tenant`` is parametrized with (a name, or :data:`UNSELECTED`)."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("tenant") if callspec is not None else None


def _unknown_tenant(name: str, tenant_set: TenantSet, disabled_ok: bool = False) -> str:
    """Why ``name`` cannot be selected; ``""`` if it can."""
    names = [t.name for t in tenant_set]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"no tenant '{name}' in {tenant_set.file}{hint}"
    if not disabled_ok and not tenant_set[name].enabled:
        return f"tenant '{name}' is disabled in {tenant_set.file}; disabled tenants are not tested"
    return ""


def _unknown_app(path: str) -> str:
    """Why ``path`` names no importable app module; ``""`` if it does (typos must not
    silently deselect every test, while an app no tenant runs just selects none)."""
    module = path.partition(":")[0]
    try:
        if importlib.util.find_spec(module) is not None:
            return ""
    except (ImportError, ValueError):
        pass
    return f"app module '{module}' was not found"


def _runs(tenant: TenantConfig, path: str) -> bool:
    """Whether the tenant runs ``path``: its module, or exactly its ``module:factory``."""
    module, _, factory = path.partition(":")
    return module == tenant.module and factory in ("", tenant.factory)
