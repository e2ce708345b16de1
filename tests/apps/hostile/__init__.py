"""Tenant apps written by a hostile or careless author, for the containment tests.

Each factory misbehaves in one way the dispatcher must contain to its own tenant (DESIGN 4, 9):
exiting, hanging, racing its own schema, or reaching for a database that is not its own. The
misbehaviour is chosen by config, so one tenants file can hold several of them::

    tenants:
      quits: {app: "tests.apps.hostile:exits"}
      slow:  {app: "tests.apps.hostile:hangs", config: {HANG_UNTIL_FILE: /tmp/go}}
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Row(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]


def _app(tenant_config: Any, extension: SQLAlchemy = db, **config: Any) -> Flask:
    app = Flask(__name__, instance_path=tenant_config.instance_path, instance_relative_config=True)
    app.config.from_mapping({"SQLALCHEMY_DATABASE_URI": tenant_config.database_uri, **config})
    app.config.from_mapping(tenant_config.config)
    app.config.from_pyfile("config.py", silent=True)
    extension.init_app(app)

    @app.get("/")
    def index() -> Any:
        return jsonify(tenant=tenant_config.name, pid=os.getpid())

    @app.post("/rows/<text>")
    def add(text: str) -> Any:
        db.session.add(Row(text=text))
        db.session.commit()
        return jsonify(added=text), 201

    @app.get("/rows")
    def rows() -> Any:
        return jsonify(rows=[r.text for r in db.session.scalars(select(Row))])

    @app.get("/pool")
    def pool() -> Any:
        """Whether the engine's pool stayed the same through this request (an eviction that
        disposed it meanwhile would replace it)."""
        before = db.engine.pool
        db.session.execute(text("SELECT 1"))
        time.sleep(float(request.args.get("sleep", "0")))
        db.session.execute(text("SELECT 1"))
        return jsonify(same=db.engine.pool is before)

    @app.get("/wait/<name>")
    def wait(name: str) -> Any:
        """Answers once ``<instance folder>/<name>`` exists (30 s at most)."""
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(app.instance_path, name)):
            if time.monotonic() > deadline:
                return jsonify(waited=False), 504
            time.sleep(0.01)
        return jsonify(waited=True)

    @app.get("/exit")
    def exit_now() -> Any:
        sys.exit("a view that ends the process")

    return app


def exits(tenant_config: Any) -> Flask:
    """``sys.exit()`` in the factory: at boot it would end the worker."""
    sys.exit(3)


def interrupts(tenant_config: Any) -> Flask:
    """A ``KeyboardInterrupt`` no operator sent."""
    raise KeyboardInterrupt


def hangs(tenant_config: Any) -> Flask:
    """Blocks until the file named by ``HANG_UNTIL_FILE`` exists (or an hour passed)."""
    go = tenant_config.config["HANG_UNTIL_FILE"]
    deadline = time.monotonic() + 3600
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _app(tenant_config)


def spins(tenant_config: Any) -> Flask:
    """Like :func:`hangs`, busy: Python code runs (holding the GIL most of the time) until the
    file named by ``HANG_UNTIL_FILE`` exists (or an hour passed)."""
    go = tenant_config.config["HANG_UNTIL_FILE"]
    deadline = time.monotonic() + 3600
    while not os.path.exists(go) and time.monotonic() < deadline:
        sum(range(10_000))
    return _app(tenant_config)


def seeds(tenant_config: Any) -> Flask:
    """The seeds' pattern: the factory creates its own tables (and a first row) when built.

    Two workers running it at once race: one gets "table already exists" (or a duplicate
    first row) unless builds of one tenant are serialised.
    """
    app = _app(tenant_config)
    with app.app_context():
        db.create_all()
        if db.session.scalar(select(Row).where(Row.text == "seed")) is None:
            time.sleep(0.05)  # what a real seed does between its check and its write
            db.session.add(Row(text="seed"))
            db.session.commit()
    return app


def uses_other_database(tenant_config: Any) -> Flask:
    """Ignores its database and uses ``OTHER_DATABASE`` (from its config) instead."""
    return _app(tenant_config, SQLALCHEMY_DATABASE_URI=tenant_config.config["OTHER_DATABASE"])


#: Binds are per extension in Flask-SQLAlchemy: an app with one has its own.
db_with_binds = SQLAlchemy(model_class=Base)


def binds_other_database(tenant_config: Any) -> Flask:
    """Its own database, plus a bind to ``OTHER_DATABASE``."""
    other = tenant_config.config["OTHER_DATABASE"]
    return _app(tenant_config, db_with_binds, SQLALCHEMY_BINDS={"other": other})


def ordinary(tenant_config: Any) -> Flask:
    """A well-behaved app, for the neighbours of the ones above."""
    return _app(tenant_config)
