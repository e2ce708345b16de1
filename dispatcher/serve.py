"""Entry points that turn a tenants file into something a server runs.

``wsgi.py`` uses :func:`create_dispatcher` for uWSGI's ``application`` and :func:`flask_app`
for ``flask --app wsgi run``; ``python -m dispatcher serve`` uses :func:`run_dev_server`::

    application = create_dispatcher("tenants.yaml")
    app = flask_app(application)
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

from flask import Flask
from werkzeug.exceptions import NotFound
from werkzeug.serving import is_running_from_reloader, run_simple

from . import collector
from .dispatch import Dispatcher
from .loader import load_tenants
from .logs import configure_logging
from .problems import ConfigError
from .running import served_before

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger("dispatcher")


def create_dispatcher(tenants_file: str | os.PathLike[str]) -> Dispatcher:
    """The dispatcher a server process runs for a tenants file: what ``wsgi.py`` serves.

    Configures logging (one line per record on stderr, naming the tenant), loads and validates
    the file, and creates a :class:`~dispatcher.Dispatcher` that follows its edits, with the
    eager tenants built and out of the garbage collector's way. ::

        application = create_dispatcher(os.environ.get("TENANTS_FILE", "tenants.yaml"))

    :param tenants_file: the tenants file (``tenants.yaml``); relative paths are taken from
        the current directory.
    :return: the running dispatcher, a WSGI application.
    :raises dispatcher.ConfigError: the file cannot be read or is not valid; the message lists
        every problem, and nothing is built or created on disk. The one exception: a uWSGI
        worker respawned by a master whose workers already serve an earlier, valid version of
        the file serves that version (the problems are logged) instead of raising.
    """
    configure_logging()
    collector.freeze()  # what the imports made: the server keeps it
    try:
        tenant_set = collector.kept(lambda: load_tenants(tenants_file))
    except ConfigError as error:
        fallback = served_before(os.fspath(tenants_file))
        if fallback is None:
            raise
        tenant_set = fallback
        log.error(
            "%s is not valid; this worker serves the tenants its server served before. "
            "Problems:\n%s",
            os.fspath(tenants_file),
            error,
        )
    dispatcher = Dispatcher(tenant_set)
    # A server process keeps the apps built at boot for its whole life: move them out of the
    # garbage collector's way (a full collection over 1,000 apps pauses requests ~160 ms), and
    # before uWSGI forks, out of the pages a collection would write to.
    collector.freeze()
    return dispatcher


def flask_app(dispatcher: Dispatcher) -> Flask:
    """A Flask app whose ``wsgi_app`` is the dispatcher, for ``flask --app wsgi run``."""
    app = Flask("dispatcher")
    app.wsgi_app = dispatcher  # type: ignore[method-assign]
    return app


def run_dev_server(tenants_file: str, host: str, port: int, reload: bool) -> None:
    """Serve every tenant with werkzeug's dev server, restarting when code changes.

    Edits to the tenants file are picked up by live reload, as under uWSGI (an invalid edit
    keeps the server running on the previous tenants); SIGHUP makes it re-read the file now.
    """
    app: WSGIApplication
    if reload and not is_running_from_reloader():
        # This process only watches code and restarts the serving child: validate the file
        # here so a bad one fails at once, but build the tenants in the child only.
        load_tenants(tenants_file)
        app = NotFound()
    else:
        dispatcher = create_dispatcher(tenants_file)
        signal.signal(signal.SIGHUP, lambda signum, frame: dispatcher.reload_now())
        app = dispatcher
    run_simple(host, port, app, use_reloader=reload, threaded=True)
