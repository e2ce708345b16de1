"""The process bench/bench_instructions.py runs under callgrind: one tenants file, its sides.

It builds each side's WSGI callable (the dispatcher as wsgi.py builds it, or the app alone, or
werkzeug's ``DispatcherMiddleware``), warms up with instrumentation off, switches it on
(bench/callgrind.py), and runs segments of K1 and K2 requests per side, one callgrind dump per
segment; it prints what each dump was for as JSON on its last line::

    valgrind --tool=callgrind --instr-atstart=no python bench/bench_instructions.py --child \\
        --file 10000-mixed.yaml --sides path,host --rounds 4 --k1 30 --k2 100 --warmup 200
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from bench import annotate, callgrind
from bench.instruction_sides import BY_NAME, Side, name

WSGI = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
PATH_TENANT = name(0)


def environ(path: str, host: str, script_name: str = "") -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    env = EnvironBuilder(path=path, base_url=f"http://{host}{script_name}/").get_environ()
    env["REQUEST_URI"] = script_name + path  # as uWSGI sets it
    return env


def callables(sides: list[Side], file: Path) -> dict[str, tuple[WSGI, list[dict[str, Any]]]]:
    """Each side's WSGI callable and the environs of its requests (taken in turn)."""
    from werkzeug.exceptions import NotFound
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from dispatcher import build_app, create_dispatcher, load_tenants

    found: dict[str, tuple[WSGI, list[dict[str, Any]]]] = {}
    if sides[0].name in ("app", "middleware"):
        # What the dispatcher hands the path tenant's app: its prefix in SCRIPT_NAME.
        app = build_app(load_tenants(file)[PATH_TENANT])
        found["app"] = (app, [environ("/", "127.0.0.1", f"/{PATH_TENANT}")])
        middleware = DispatcherMiddleware(NotFound(), {f"/{name(i)}": app for i in range(10_000)})
        found["middleware"] = (middleware, [environ(f"/{PATH_TENANT}/", "127.0.0.1")])
        return found
    # Loading 100,000 tenants runs full collections that take minutes under valgrind; they
    # are the boot's, not a request's, and create_dispatcher freezes what it built anyway.
    gc.disable()
    dispatch = create_dispatcher(file)  # as wsgi.py: logging, gc.freeze()
    gc.enable()
    # The once-a-second background work (file and holds checks, the metrics' adding up) is
    # no request's: bench_stalls and bench_metrics measure it. Stopped, it lands in no segment.
    if dispatch._ticker is not None:
        dispatch._ticker.stop()
    count = sides[0].tenants
    first_host = f"{name(count // 2)}.localhost"  # the first host tenant of a mixed file
    requests = {
        "path": [(f"/{PATH_TENANT}/", "127.0.0.1")],
        "host": [("/", first_host)],
        "health": [("/_dispatcher/health", "127.0.0.1")],
        "404": [("/no-such-tenant/", "127.0.0.1")],
        "host-hit": [("/", f"{PATH_TENANT}.localhost")],
        "host-miss": [("/", f"{name(i)}.localhost") for i in range(count)],
    }
    for side in sides:
        kind = side.name if side.name in requests else side.name.partition("-")[0]
        found[side.name] = (dispatch, [environ(*r) for r in requests[kind]])
    return found


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def serve(app: WSGI, environs: Iterator[dict[str, Any]], requests: int) -> None:
    """``requests`` requests, as a server makes them: the body consumed, then closed."""
    for _ in range(requests):
        body = app(dict(next(environs)), _start_response)
        try:
            for _chunk in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


def status_of(app: WSGI, env: dict[str, Any]) -> str:
    seen: list[str] = []
    body = app(dict(env), lambda status, headers, exc_info=None: seen.append(status))
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return seen[0]


def tenant_app(app: WSGI, env: dict[str, Any]) -> tuple[WSGI, list[dict[str, Any]]]:
    """The Flask app a request to ``app`` ends in, and the environ it receives there.

    Found by watching ``Flask.wsgi_app`` for one request, whatever the layers above it do."""
    from flask import Flask

    seen: list[tuple[Flask, dict[str, Any]]] = []
    original = Flask.wsgi_app

    def watch(self: Flask, environ: dict[str, Any], start_response: Any) -> Any:
        seen.append((self, dict(environ)))
        return original(self, environ, start_response)

    Flask.wsgi_app = watch  # type: ignore[method-assign]
    try:
        status_of(app, env)
    finally:
        Flask.wsgi_app = original  # type: ignore[method-assign]
    if len(seen) != 1:
        raise SystemExit(f"expected one tenant app to answer, saw {len(seen)}")
    return seen[0][0], [seen[0][1]]


def child(args: argparse.Namespace) -> None:
    """Under callgrind: warm up uninstrumented, then count the segments (and annotate).

    Each side that ends in the tenant's app is paired with that app called directly, in the
    same process, with the environ it received: the side's overhead is taken round by round,
    so a slow drift of the allocator's state over a run cancels out too. With
    ``--annotate-requests``, the side's WSGI layers are measured instead, then the side runs
    under bench/annotate.py's hook."""
    sides = [BY_NAME[s] for s in args.sides.split(",")]
    targets = callables(sides, Path(args.file))
    statuses = {
        side.name: status_of(app, envs[0])
        for side, (app, envs) in zip(sides, (targets[s.name] for s in sides), strict=True)
    }  # this also builds the lazy tenants
    names = [side.name for side in sides]
    if args.annotate_requests:  # each WSGI layer of the side instead
        app, envs = targets[sides[0].name]
        layers = annotate.discover_layers(app, envs[0])  # with its first environ only
        targets.update({label: (entry, [env]) for label, entry, env in layers})
        names = [label for label, _, _ in layers]
    else:
        for side in sides:
            if side.routed and "app" not in targets:
                targets[f"{side.name}/app"] = tenant_app(
                    targets[side.name][0], targets[side.name][1][0]
                )
                names.append(f"{side.name}/app")
    # One endless stream of environs per label: a segment goes on where the last one stopped.
    streams = {label: (app, itertools.cycle(envs)) for label, (app, envs) in targets.items()}
    weight = {side.name: side.weight for side in sides}
    # Warm up once everything is in place (watching Flask.wsgi_app above changed the class,
    # and with it the interpreter's caches), uninstrumented: fast.
    # host-miss warms up every host once: each tenant's first request in a worker makes its
    # in-flight count (once per tenant and worker); what is measured is the host lookup.
    for label in names:
        warmup = max(args.warmup // weight.get(label, 1), 2)
        serve(*streams[label], len(targets[label][1]) if label == "host-miss" else warmup)
    requests = callgrind.ClientRequests()
    requests.start_instrumentation()
    for label in names:
        serve(*streams[label], 2)  # the instrumented code's first run
    result: dict[str, Any] = {"statuses": statuses, "on_valgrind": requests.on_valgrind}
    order = []
    # K1, K2, K2, K1: each size once at an even and once at an odd position, because the
    # allocator's state alternates from one segment to the next (measured: ~0.2% of a
    # request), and a pair always taken in the same order carries that into every estimate.
    for _ in range(args.rounds):
        for label in names:
            for k in (args.k1, args.k2, args.k2, args.k1):
                k = max(k // weight.get(label, 1), 1 if k == args.k1 else 3)
                gc.collect()
                requests.zero()
                serve(*streams[label], k)
                requests.dump()
                order.append((label, k))
    result["order"] = order
    if args.annotate_requests:
        result["layers"] = names
        result["environs"] = len(targets[sides[0].name][1])
        gc.collect()
        annotator = annotate.Annotator(requests.fast_dump, server_code=serve.__code__)
        gc.disable()  # the hook's own allocations would start collections inside any step
        requests.zero()
        annotator.calibrate()
        with annotator:
            serve(*streams[sides[0].name], args.annotate_requests)
        gc.enable()
        result["calibration"] = annotator.named(annotator.calibration)
        result["events"] = annotator.named(annotator.events)
    requests.stop_instrumentation()
    print(json.dumps(result))
