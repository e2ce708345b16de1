"""A tenant app for the restore test under uWSGI: rows it stores, and which worker answers.

- ``GET /rows[?sleep=S]``: ``{"pid": ..., "rows": [...]}``, the worker's pid and every row's
  text in id order, read through the worker's pooled connection (after an optional sleep, so
  concurrent requests spread over the workers).
- ``POST /rows`` (form ``text``): stores a row; ``{"pid": ...}``.

Listed in a tenants file as ``app: tests.e2e.rows_app``; its table is made by ``create_all()``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Row(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]


def create_app(tenant_config: Any) -> Flask:
    app = Flask(__name__, instance_path=tenant_config.instance_path, instance_relative_config=True)
    app.config.from_mapping(SQLALCHEMY_DATABASE_URI=tenant_config.database_uri)
    db.init_app(app)

    @app.get("/rows")
    def rows() -> Any:
        time.sleep(float(request.args.get("sleep", "0")))
        texts = db.session.scalars(select(Row.text).order_by(Row.id)).all()
        return jsonify(pid=os.getpid(), rows=list(texts))

    @app.post("/rows")
    def add() -> Any:
        db.session.add(Row(text=request.form["text"]))
        db.session.commit()
        return jsonify(pid=os.getpid()), 201

    return app
