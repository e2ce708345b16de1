"""The smallest tenant app: ``GET /`` answers ``ok``. What bench/bench_instructions.py routes to.

A real app's work would hide the dispatcher's cost; this one does only what every Flask request
does (a request context, URL matching, a response), so the dispatcher's share shows. The
factory follows the house pattern and uses no database::

    tenants:
      acme: {app: bench.tiny}
"""

from __future__ import annotations

from typing import Any

from flask import Flask


def create_app(tenant_config: Any) -> Flask:
    app = Flask(__name__, instance_path=tenant_config.instance_path, instance_relative_config=True)
    app.config.from_mapping(tenant_config.config)

    @app.get("/")
    def index() -> str:
        return "ok"

    return app
