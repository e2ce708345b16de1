"""The baseline server of bench/bench_scale.py: one tenant's app served alone, no dispatcher.

uWSGI runs it as ``module = bench.alone:application``. It builds the tenant ``$BENCH_TENANT`` of
``$TENANTS_FILE`` with the dispatcher's own :func:`dispatcher.build_app` (the same factory, the
same isolation settings, the same database), so both sides of a comparison run the same app
code and only the routing differs::

    TENANTS_FILE=tenants.yaml BENCH_TENANT=acme uwsgi --ini uwsgi.ini --module bench.alone
"""

from __future__ import annotations

import os

from dispatcher import build_app, load_tenants

tenant = load_tenants(os.environ["TENANTS_FILE"])[os.environ["BENCH_TENANT"]]
application = build_app(tenant)
