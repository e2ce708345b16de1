"""A tenant app for the end-to-end tests that reports what the process serving it sees.

- ``GET /conn``: the pid serving the request, the pid that opened the database connection the
  request uses (recorded by a SQLAlchemy ``connect`` event) and the pid that built the app.
- ``GET /env``: what nginx and uWSGI passed (host, scheme, forwarded headers) and what the app
  makes of it (``url_for(_external=True)``, ``request.is_secure``, ``remote_addr``).
- ``GET /redirect``: a redirect to ``url_for("env", _external=True)``.
- ``GET /hang?until=FILE``: waits until FILE exists (at most 25 s), so a test can hold requests
  in flight and let them go, with no fixed sleep.
- ``GET /status?code=N``: answers with any status, even one HTTP does not have (999).

Listed in a tenants file as ``app: tests.e2e.probe_app``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, jsonify, redirect, request, url_for
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event, text

db = SQLAlchemy()

#: The environ keys that routing and URL building depend on.
ENVIRON_KEYS = (
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "SCRIPT_NAME",
    "PATH_INFO",
    "REQUEST_URI",
    "HTTPS",
    "wsgi.url_scheme",
)


def _remember_opener(dbapi_connection: Any, connection_record: Any) -> None:
    connection_record.info["opened_by"] = os.getpid()


def create_app(tenant_config: Any) -> Flask:
    app = Flask(__name__, instance_path=tenant_config.instance_path, instance_relative_config=True)
    app.config.from_mapping(SQLALCHEMY_DATABASE_URI=tenant_config.database_uri)
    db.init_app(app)
    with app.app_context():
        event.listen(db.engine, "connect", _remember_opener)
    built_by = os.getpid()

    @app.get("/conn")
    def conn() -> Any:
        time.sleep(float(request.args.get("sleep", "0")))
        connection = db.session.connection()
        connection.execute(text("SELECT 1"))
        return jsonify(
            pid=os.getpid(),
            opened_by=connection.connection.info.get("opened_by"),
            built_by=built_by,
        )

    @app.get("/env")
    def env() -> Any:
        environ = request.environ
        return jsonify(
            environ={key: environ.get(key) for key in ENVIRON_KEYS},
            forwarded={k: v for k, v in environ.items() if k.startswith("HTTP_X_FORWARDED_")},
            remote_addr=request.remote_addr,
            secure=request.is_secure,
            script_root=request.script_root,
            external=url_for("env", _external=True),
        )

    @app.get("/redirect")
    def go() -> Any:
        return redirect(url_for("env", _external=True))

    @app.get("/hang")
    def hang() -> Any:
        until = request.args["until"]
        deadline = time.monotonic() + 25  # under uwsgi.ini's harakiri (30 s)
        while not os.path.exists(until) and time.monotonic() < deadline:
            time.sleep(0.02)
        return "released"

    @app.get("/status")
    def status() -> Any:
        return Response("as you asked", status=int(request.args["code"]))

    return app
