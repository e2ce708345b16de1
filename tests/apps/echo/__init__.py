"""A tiny factory-built app for the dispatcher's own tests: it reports what it sees.

Its factory does what an ordinary Flask tutorial app does, including the tutorial's
``SECRET_KEY="dev"`` default, so the tests prove the dispatcher replaces it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify, redirect, request, session, url_for
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.routing import BaseConverter


class AnyPath(BaseConverter):
    """The rest of the path, newlines included (werkzeug's ``path`` stops at one)."""

    regex = r"[\s\S]+"
    part_isolating = False


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Item(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]


def create_app(tenant_config: Any, app_class: type[Flask] = Flask) -> Flask:
    app = app_class(
        __name__, instance_path=tenant_config.instance_path, instance_relative_config=True
    )
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI=tenant_config.database_uri)
    app.config.from_mapping(tenant_config.config)
    app.config.from_pyfile("config.py", silent=True)
    if app.config.get("FAIL_TO_BUILD"):
        raise RuntimeError("this factory was told to fail")
    db.init_app(app)
    app.url_map.converters["anything"] = AnyPath

    @app.get("/")
    def index() -> Any:
        return jsonify(
            tenant=tenant_config.name,
            script_root=request.script_root,
            path=request.path,
            external=url_for("index", _external=True),
            secure=request.is_secure,
            via=request.environ.get("echo.via"),
        )

    @app.post("/login")
    def login() -> Any:
        session["user"] = request.form["user"]
        return redirect(url_for("whoami"))

    @app.get("/whoami")
    def whoami() -> Any:
        return jsonify(user=session.get("user"), tenant=tenant_config.name)

    @app.post("/items")
    def add_item() -> Any:
        existing = db.session.scalars(select(Item)).all()  # read, then write
        db.session.add(Item(text=request.form["text"]))
        db.session.commit()
        return jsonify(before=len(existing)), 201

    @app.get("/items")
    def items() -> Any:
        return jsonify(items=[i.text for i in db.session.scalars(select(Item))])

    @app.get("/log")
    def log() -> Any:
        current_app.logger.warning("hello from the app")
        return "logged"

    @app.get("/log/<anything:rest>")
    def log_request(rest: str) -> Any:
        # As apps do: the path and a header as arguments, and pre-formatted in an f-string.
        current_app.logger.warning("asked for %s by %s", request.path, request.user_agent)
        current_app.logger.warning(f"f-string: {request.path}")
        return "logged"

    @app.cli.command("hello")
    def hello() -> None:
        """Print which tenant's app this is."""
        print(f"hello from {tenant_config.name}")

    @app.get("/boom")
    @app.get("/boom/<anything:rest>")
    def boom(rest: str = "") -> Any:
        raise RuntimeError("boom")

    return app


class OwnCallFlask(Flask):
    """A Flask subclass with a ``__call__`` of its own (some apps adjust the environ there)."""

    def __call__(self, environ: Any, start_response: Any) -> Any:
        environ["echo.via"] = "OwnCallFlask.__call__"
        return super().__call__(environ, start_response)


def create_app_with_own_call(tenant_config: Any) -> Flask:
    return create_app(tenant_config, OwnCallFlask)


def create_app_with_middleware(tenant_config: Any) -> Flask:
    """Middleware the way Flask's docs put it: around ``app.wsgi_app``."""
    app = create_app(tenant_config)
    inner = app.wsgi_app

    def middleware(environ: Any, start_response: Any) -> Any:
        environ["echo.via"] = "middleware"
        return inner(environ, start_response)

    app.wsgi_app = middleware  # type: ignore[method-assign]
    return app


def create_app_elsewhere(tenant_config: Any) -> Flask:
    """A factory that ignores the instance folder it was given: the dispatcher refuses it."""
    return Flask(__name__, instance_path="/tmp")


def create_something_else(tenant_config: Any) -> object:
    """A factory that does not return a Flask app."""
    return object()
