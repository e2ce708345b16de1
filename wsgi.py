"""The entry point: every tenant of the tenants file, behind one WSGI callable.

- ``application`` is for uWSGI (``module = wsgi:application`` in uwsgi.ini).
- ``app`` is a Flask app whose ``wsgi_app`` is the dispatcher, for ``flask --app wsgi run``.

The file read is ``$TENANTS_FILE``, else ``tenants.yaml`` beside this file. A bad file raises
``dispatcher.ConfigError`` listing every problem, and nothing is built.
"""

import os
from pathlib import Path

from dispatcher import create_dispatcher, flask_app

TENANTS_FILE = os.environ.get("TENANTS_FILE") or str(Path(__file__).with_name("tenants.yaml"))

application = create_dispatcher(TENANTS_FILE)
app = flask_app(application)
