"""dispatcher: one WSGI process hosting many factory-built Flask apps, one per tenant.

::

    from dispatcher import create_dispatcher
    application = create_dispatcher("tenants.yaml")   # for uWSGI

See README.md and docs/ for tenants.yaml, the CLI (``python -m dispatcher``), the pytest plugin
(``dispatcher.testing``) and deployment.
"""

from __future__ import annotations

from .build import build_app
from .dispatch import Dispatcher
from .errors import BackupError, BuildError, DispatcherError, IsolationError
from .loader import check_tenants, load_tenants
from .problems import ConfigError, Problem
from .serve import create_dispatcher, flask_app
from .tenant import TenantConfig, TenantSet
from .tenantapp import TenantApp

__all__ = [
    "BackupError",
    "BuildError",
    "ConfigError",
    "Dispatcher",
    "DispatcherError",
    "IsolationError",
    "Problem",
    "TenantApp",
    "TenantConfig",
    "TenantSet",
    "build_app",
    "check_tenants",
    "create_dispatcher",
    "flask_app",
    "load_tenants",
]
