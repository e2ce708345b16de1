"""Entry points that turn a tenants file into something a server runs.

``wsgi.py`` uses :func:`create_dispatcher` for uWSGI's ``application`` and :func:`flask_app`
for ``flask --app wsgi run``; ``python -m dispatcher serve`` uses :func:`run_dev_server`::

    application = create_dispatcher("tenants.yaml")
    app = flask_app(application)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from flask import Flask
from werkzeug.exceptions import NotFound
from werkzeug.serving import is_running_from_reloader, run_simple

from .logs import configure_logging
from .routing import Dispatcher
from .spec import load_tenants

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def create_dispatcher(tenants_file: str | os.PathLike[str]) -> Dispatcher:
    """Configure logging, load and validate the file, build the eager tenants.

    Raises :class:`dispatcher.ConfigError` listing every problem; nothing is built or created
    on disk for a bad file.
    """
    configure_logging()
    return Dispatcher(load_tenants(tenants_file))


def flask_app(dispatcher: Dispatcher) -> Flask:
    """A Flask app whose ``wsgi_app`` is the dispatcher, for ``flask --app wsgi run``."""
    app = Flask("dispatcher")
    app.wsgi_app = dispatcher  # type: ignore[method-assign]
    return app


def run_dev_server(tenants_file: str, host: str, port: int, reload: bool) -> None:
    """Serve every tenant with werkzeug's dev server, restarting when code or the file change."""
    app: WSGIApplication
    if reload and not is_running_from_reloader():
        # This process only watches files and restarts the serving child: validate the file
        # here so a bad one fails at once, but build the tenants in the child only.
        load_tenants(tenants_file)
        app = NotFound()
    else:
        app = create_dispatcher(tenants_file)
    run_simple(host, port, app, use_reloader=reload, extra_files=[tenants_file], threaded=True)
