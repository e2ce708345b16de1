"""What makes one app safe to reuse across tests: its state put back, and its engines
checked to reach nothing but the test's own database.

Building a tenant's app costs milliseconds (its URL rules alone), more than all the rest of a
test's setup, so the plugin builds it once per (tenant, ``app_config``) and reuses it. After
each test, :class:`AppState` puts back what a test may change on the app (its config) and
says when the app was changed in a way it cannot put back (a route, a hook, an attribute,
an extension added; a view, a template global or a URL map or JSON setting replaced): that
app is dropped and the next test gets a new one.
:func:`check_config` refuses, before any factory runs, a test config that would set the
database (issue 11: a config key pointed the plugin's tests at a real one); ``build_app``
then checks every engine the app really has::

    check_config(tenant); app = build_app(tenant)
    state = AppState(app)           # after the build
    ...                             # a test
    if not state.restore(app): app = None      # changed beyond repair: build anew
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any

from flask import Flask
from flask.globals import _cv_app

from ..errors import IsolationError
from ..rules import config_faults
from ..tenant import TenantConfig

#: Flask sets this on the first request; put back so a test may still add routes, as on a
#: new app (the app is then dropped after the test).
_FIRST_REQUEST = "_got_first_request"


class AppState:
    """An app's state as built, to put back after each test, or to tell it cannot be."""

    def __init__(self, app: Flask) -> None:
        for lazy in ("name", "logger", "jinja_env"):  # cached on first use: not by a test
            getattr(app, lazy)
        self.changed = False
        original = type(app)._check_setup_finished

        def setup_method_called(f_name: str) -> None:
            # Every setup method (route, before_request, register_blueprint, errorhandler,
            # template_filter...) asks this first: the app no longer is as built.
            self.changed = True
            original(app, f_name)

        vars(app)["_check_setup_finished"] = setup_method_called
        self.config = copy_config(dict(app.config))
        self.attributes = dict(vars(app))
        self.extensions = dict(app.extensions)
        self.rules = len(list(app.url_map.iter_rules()))
        self.settings = [dict(names) for names in _settings(app)]

    def restore(self, app: Flask) -> bool:
        """Put the config back; ``False`` if the app changed beyond that (drop it)."""
        if self.changed or _reshaped(vars(app), self.attributes, ignore=(_FIRST_REQUEST,)):
            return False
        if _reshaped(app.extensions, self.extensions):
            return False
        if any(map(_reshaped, _settings(app), self.settings)):
            return False
        if len(list(app.url_map.iter_rules())) != self.rules:
            return False
        context = _cv_app.get(None)
        if context is not None and context.app is app:  # a leaked app context: not reused
            return False
        if dict(app.config) != self.config:
            app.config.clear()
            app.config.update(copy_config(self.config))
        vars(app)[_FIRST_REQUEST] = False
        return True


def _settings(app: Flask) -> list[Mapping[str, Any]]:
    """What a test may change in place on an app with no setup method: its views, its
    templates' globals, filters and tests, its URL map's and JSON provider's settings."""
    url_map = app.url_map
    return [
        app.view_functions,
        app.jinja_env.globals,
        app.jinja_env.filters,
        app.jinja_env.tests,
        {name: getattr(url_map, name) for name in _URL_MAP_SETTINGS},
        vars(app.json),
    ]


#: Settings of werkzeug's ``Map`` (its other attributes change as it serves).
_URL_MAP_SETTINGS = (
    "converters",
    "default_subdomain",
    "host_matching",
    "merge_slashes",
    "redirect_defaults",
    "sort_key",
    "sort_parameters",
    "strict_slashes",
)


def _reshaped(
    now: Mapping[str, Any], then: Mapping[str, Any], ignore: Collection[str] = ()
) -> bool:
    """Whether a name was added, removed or bound to another object."""
    if now.keys() != then.keys():
        return True
    return any(now[k] is not then[k] for k in now if k not in ignore)


def copy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy, so that a list or dict in the config mutated in place is put back too;
    a value that cannot be copied is shared (and only rebinding it is put back)."""
    copied = {}
    for key, value in config.items():
        try:
            copied[key] = copy.deepcopy(value)
        except Exception:
            copied[key] = value
    return copied


def check_config(tenant: TenantConfig) -> None:
    """Refuse, before any factory runs, a config that could set the database itself: the
    rules tenants.yaml's config is checked by, applied to what the app_config fixture added."""
    faults = config_faults(dict(tenant.config))
    if faults:
        keys = " and ".join(".".join(fault.field) for fault in faults)
        raise IsolationError(
            f"tenant '{tenant.name}' ({tenant.source or 'tenants file'}): {keys} in its "
            "config (tenants.yaml config:, defaults.config: or the app_config fixture) could "
            "point its app at a database other than the test's throwaway one. The database is "
            "set with 'database:' in tenants.yaml; remove the key"
        )
