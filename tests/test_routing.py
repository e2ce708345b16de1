"""Routing through the dispatcher's WSGI callable: hosts, paths, 404/400/503, health."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, EnvironBuilder

from dispatcher import Dispatcher, TenantApp, load_tenants
from dispatcher.tenant import TenantConfig
from tests.conftest import Clock

TENANT_NAMES = ("acme", "globex", "umbrella")


def get(echo_client: Client, url: str, host: str = "localhost", **kwargs: object):  # type: ignore[no-untyped-def]
    return echo_client.get(url, headers={"Host": host}, **kwargs)


def assert_names_no_tenant(body: str) -> None:
    for name in TENANT_NAMES:
        assert name not in body


def test_path_tenant_sees_its_prefix(echo_client: Client) -> None:
    data = get(echo_client, "/acme/").json
    assert data["tenant"] == "acme"
    assert data["script_root"] == "/acme"
    assert data["path"] == "/"
    assert data["external"] == "http://localhost/acme/"


@pytest.mark.parametrize(
    ("factory", "via"),
    [
        ("create_app", None),
        ("create_app_with_own_call", "OwnCallFlask.__call__"),
        ("create_app_with_middleware", "middleware"),
    ],
)
def test_each_request_goes_through_the_apps_own_entry_points(
    make_dispatcher: Callable[[str], Dispatcher], factory: str, via: str | None
) -> None:
    """A Flask subclass's own ``__call__`` and middleware set on ``app.wsgi_app`` both see
    every request (the dispatcher calls ``wsgi_app`` itself only for Flask's own ``__call__``),
    the first one (which builds the app) and the next."""
    dispatcher = make_dispatcher(
        f"version: 1\ntenants: {{t: {{app: 'tests.apps.echo:{factory}', path: /t, lazy: true}}}}"
    )
    client = Client(dispatcher)
    for _ in range(2):  # the first request builds the app, the second finds it built
        data = get(client, "/t/").json
        assert (data["tenant"], data["via"]) == ("t", via)


def test_redirect_under_prefix(echo_client: Client) -> None:
    response = echo_client.post("/acme/login", data={"user": "ann"}, headers={"Host": "localhost"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/acme/whoami"


def test_bare_prefix_redirects_to_slash(echo_client: Client) -> None:
    response = get(echo_client, "/acme")
    assert response.status_code == 308
    assert response.headers["Location"].endswith("/acme/")


@pytest.mark.parametrize(
    "host",
    ["umbrella.localhost", "UMBRELLA.Localhost", "umbrella.localhost:5000", "umbrella.localhost."],
)
def test_subdomain_host_is_normalised(echo_client: Client, host: str) -> None:
    assert get(echo_client, "/", host).json["tenant"] == "umbrella"


def test_host_routing_comes_before_path_routing(echo_client: Client) -> None:
    # umbrella's app has no /acme/ route: the request must not reach acme's app.
    assert get(echo_client, "/acme/", "umbrella.localhost").status_code == 404
    assert get(echo_client, "/acme/", "localhost").json["tenant"] == "acme"


def test_custom_domain_host(make_dispatcher: Callable[[str], Dispatcher]) -> None:
    dispatcher = make_dispatcher(
        """
        version: 1
        tenants:
          globex: {app: tests.apps.echo, hosts: [globex.com, www.globex.com]}
        """
    )
    echo_client = Client(dispatcher)
    assert get(echo_client, "/", "www.globex.com").json["tenant"] == "globex"
    assert get(echo_client, "/", "globex.com:8443").json["tenant"] == "globex"
    assert get(echo_client, "/", "evil.globex.com").status_code == 404


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("/nope/", "localhost"),
        ("/", "localhost"),
        ("/acme/", "unknown.example.com"),  # path tenants answer only on server_names
        ("/", "nope.localhost"),
        ("/_dispatcher/other", "localhost"),
    ],
)
def test_unknown_is_plain_404_naming_no_tenant(echo_client: Client, url: str, host: str) -> None:
    response = get(echo_client, url, host)
    assert response.status_code == 404
    assert_names_no_tenant(response.get_data(as_text=True))


def test_path_tenants_answer_on_any_host_without_server_names(
    make_dispatcher: Callable[[str], Dispatcher],
) -> None:
    echo_client = Client(
        make_dispatcher("version: 1\ntenants: {acme: {app: tests.apps.echo, path: /acme}}")
    )
    assert get(echo_client, "/acme/", "anything.example").json["tenant"] == "acme"


@pytest.mark.parametrize(
    "host",
    ["bad host", "a/b", "localhost:99999", "localhost:abc", "[::1", "émoji.com", "", "a" * 300],
)
def test_malformed_host_is_400(echo_client: Client, host: str) -> None:
    assert get(echo_client, "/acme/", host).status_code == 400


def test_missing_host_header_uses_server_name(echo_client: Client) -> None:
    environ = EnvironBuilder("/", base_url="http://umbrella.localhost/").get_environ()
    del environ["HTTP_HOST"]  # an HTTP/1.0 request without Host
    status: list[str] = []
    body = b"".join(echo_client.application(environ, lambda s, h, e=None: status.append(s)))  # type: ignore[arg-type,func-returns-value]
    assert status == ["200 OK"]
    assert b'"tenant":"umbrella"' in body


@pytest.mark.parametrize(
    ("url", "raw_uri"),
    [
        ("/acme/../globex/", None),
        ("/acme/./", None),
        ("/acme/..", None),
        ("/acme/x/", "/acme%2F..%2Fglobex/x/"),
        ("/acme/x/", "/acme%2fx/"),
    ],
)
def test_dot_segments_and_encoded_slashes_are_400(
    echo_client: Client, url: str, raw_uri: str | None
) -> None:
    overrides = {"REQUEST_URI": raw_uri} if raw_uri else {}
    response = echo_client.get(url, headers={"Host": "localhost"}, environ_overrides=overrides)
    assert response.status_code == 400
    assert_names_no_tenant(response.get_data(as_text=True))


@pytest.mark.parametrize("key", ["REQUEST_URI", "RAW_URI"])
def test_encoded_slash_is_seen_in_either_raw_uri(echo_client: Client, key: str) -> None:
    """uWSGI sets REQUEST_URI, some servers only RAW_URI: either is checked."""
    environ = EnvironBuilder("/acme/x/", base_url="http://localhost/").get_environ()
    environ.pop("REQUEST_URI", None)
    environ.pop("RAW_URI", None)
    environ[key] = "/acme%2F..%2Fglobex/x/"
    status: list[str] = []
    echo_client.application(environ, lambda s, h, e=None: status.append(s))  # type: ignore[arg-type,func-returns-value]
    assert status == ["400 BAD REQUEST"]


def test_encoded_slash_in_query_string_is_fine(echo_client: Client) -> None:
    response = get(
        echo_client, "/acme/?next=%2Fx", environ_overrides={"REQUEST_URI": "/acme/?next=%2Fx"}
    )
    assert response.json["tenant"] == "acme"


@pytest.mark.parametrize("host", ["localhost", "umbrella.localhost", "whatever.example"])
def test_health_on_every_host(echo_client: Client, host: str, tmp_path: Path) -> None:
    response = get(echo_client, "/_dispatcher/health", host)
    assert response.status_code == 200
    assert response.json == {
        "status": "ok",
        "tenants": {"ready": 3, "failed": 0, "lazy": 0, "maintenance": 0},
        # The file's bytes, hashed: nodes serving the same file agree (DESIGN section 13).
        "tenants_file_sha256": hashlib.sha256((tmp_path / "tenants.yaml").read_bytes()).hexdigest(),
    }
    assert_names_no_tenant(response.get_data(as_text=True))


FAILING = """
    version: 1
    base_domain: localhost
    server_names: [localhost]
    defaults: {app: tests.apps.echo}
    tenants:
      acme: {path: /acme}
      broken: {path: /broken, config: {FAIL_TO_BUILD: true}}
      brokenhost: {subdomain: brokenhost, config: {FAIL_TO_BUILD: true}}
      elsewhere: {path: /elsewhere, app: "tests.apps.echo:create_app_elsewhere"}
      notflask: {path: /notflask, app: "tests.apps.echo:create_something_else"}
      nofactory: {path: /nofactory, app: "tests.apps.echo:no_such_factory"}
"""


def test_failing_tenants_answer_503_and_others_serve(
    make_dispatcher: Callable[[str], Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    echo_client = Client(make_dispatcher(FAILING))
    assert get(echo_client, "/acme/").json["tenant"] == "acme"
    # The 503 page says nothing of why: not the tenant, its module, nor the exception's text
    # (each of which the log below does carry, so a leak would show here).
    secrets = [
        *("broken", "elsewhere", "notflask", "nofactory", "tests.apps.echo"),
        *("this factory was told to fail", "instance_path", "create_", "no_such_factory"),
    ]
    pages = [
        get(echo_client, url) for url in ("/broken/", "/elsewhere/", "/notflask/", "/nofactory/")
    ]
    # A failed host tenant never falls through to path routing.
    pages.append(get(echo_client, "/acme/", "brokenhost.localhost"))
    for response in pages:
        assert response.status_code == 503, response.request.url
        body = response.get_data(as_text=True)
        assert "Service Unavailable" in body
        assert [s for s in secrets if s in body] == [], response.request.url
    health = get(echo_client, "/_dispatcher/health")
    assert health.status_code == 200
    assert health.json["tenants"] == {"ready": 1, "failed": 5, "lazy": 0, "maintenance": 0}
    failures = {r.tenant: r for r in caplog.records if r.levelno == logging.ERROR}  # type: ignore[attr-defined]
    assert set(failures) == {"broken", "brokenhost", "elsewhere", "notflask", "nofactory"}
    assert "this factory was told to fail" in str(failures["broken"].exc_info[1])  # type: ignore[index]
    assert "instance_path" in failures["elsewhere"].getMessage()


def test_failed_build_is_retried_after_a_second_then_less_often(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path, clock: Clock
) -> None:
    """DESIGN 9/10: a failed build is retried soon, then backing off to every 30 s."""
    config = tmp_path / "instance" / "acme" / "config.py"
    config.parent.mkdir(parents=True)
    config.write_text("FAIL_TO_BUILD = True\n")
    echo_client = Client(
        make_dispatcher(
            "version: 1\ntenants: {acme: {app: tests.apps.echo, path: /acme, lazy: true}}"
        )
    )
    waits = []
    for _ in range(7):  # each request after the wait it was told gets a new build, failing
        response = get(echo_client, "/acme/")
        assert response.status_code == 503
        waits.append(int(response.headers["Retry-After"]))
        clock.now += waits[-1] - 0.5
        assert get(echo_client, "/acme/").headers["Retry-After"] == "1"  # not retried yet
        clock.now += 0.6
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    config.write_text("FAIL_TO_BUILD = False\n")
    assert get(echo_client, "/acme/").json["tenant"] == "acme"


def test_maintenance_answers_503_with_retry_after_and_builds_nothing(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    echo_client = Client(
        make_dispatcher(
            """
            version: 1
            defaults: {app: tests.apps.echo}
            tenants:
              initech: {path: /initech, maintenance: true}
              hooli: {path: /hooli, maintenance: {retry_after: 60}}
            """
        )
    )
    assert get(echo_client, "/initech/").headers["Retry-After"] == "300"
    response = get(echo_client, "/hooli/x")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "60"
    assert not (tmp_path / "instance").exists()
    assert get(echo_client, "/_dispatcher/health").json["tenants"]["maintenance"] == 2


def test_disabled_tenant_is_not_mounted_and_gets_no_folder(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    echo_client = Client(
        make_dispatcher(
            """
            version: 1
            defaults: {app: tests.apps.echo}
            tenants:
              acme: {path: /acme}
              hooli: {path: /hooli, enabled: false}
            """
        )
    )
    assert get(echo_client, "/hooli/").status_code == 404
    assert not (tmp_path / "instance" / "hooli").exists()
    assert get(echo_client, "/_dispatcher/health").json["tenants"]["ready"] == 1


def test_lazy_tenant_is_built_on_first_request(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    echo_client = Client(
        make_dispatcher(
            "version: 1\ntenants: {acme: {app: tests.apps.echo, path: /acme, lazy: true}}"
        )
    )
    assert not (tmp_path / "instance" / "acme").exists()
    assert get(echo_client, "/_dispatcher/health").json["tenants"]["lazy"] == 1
    assert get(echo_client, "/acme/").json["tenant"] == "acme"
    assert get(echo_client, "/_dispatcher/health").json["tenants"]["ready"] == 1


def _tenant(name: str) -> TenantConfig:
    return TenantConfig(name, "x", f"/nonexistent/{name}", "sqlite://", path=f"/{name}")


def test_concurrent_first_requests_build_once() -> None:
    """Eight requests of a tenant not built yet wait for one build and share its app."""
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_builder(tenant: TenantConfig) -> Flask:
        calls.append(tenant.name)
        started.set()
        assert release.wait(10)
        return Flask(tenant.name)

    handle = TenantApp(_tenant("acme"), slow_builder)
    results: list[Flask | None] = []
    threads = [
        threading.Thread(target=lambda: results.append(handle.wait_for_build())) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    assert started.wait(10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert calls == ["acme"]
    assert len(results) == 8
    assert all(app is results[0] for app in results)


def test_slow_build_does_not_block_another_tenant() -> None:
    started, release = threading.Event(), threading.Event()

    def builder(tenant: TenantConfig) -> Flask:
        if tenant.name == "slow":
            started.set()
            assert release.wait(10)
        return Flask(tenant.name)

    slow, fast = TenantApp(_tenant("slow"), builder), TenantApp(_tenant("fast"), builder)
    build = slow.start_build()
    assert build is not None
    try:
        assert started.wait(10)
        assert fast.wait_for_build() is not None  # built while "slow" is still building
        assert slow.app is None
    finally:
        release.set()
    assert build.wait() is not None


def test_proxy_headers_are_ignored_unless_trusted(echo_client: Client) -> None:
    headers = {
        "Host": "localhost",
        "X-Forwarded-Host": "umbrella.localhost",
        "X-Forwarded-Proto": "https",
    }
    data = echo_client.get("/acme/", headers=headers).json
    assert data["tenant"] == "acme"
    assert data["external"] == "http://localhost/acme/"


def test_trusted_proxy_headers_set_scheme_and_host(
    make_dispatcher: Callable[[str], Dispatcher],
) -> None:
    echo_client = Client(
        make_dispatcher(
            """
            version: 1
            base_domain: example.com
            proxy: {x_for: 1, x_proto: 1, x_host: 1}
            tenants:
              acme: {app: tests.apps.echo, path: /acme}
              umbrella: {app: tests.apps.echo, subdomain: umbrella}
            """
        )
    )
    headers = {
        "Host": "127.0.0.1:9000",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.com",
    }
    data = echo_client.get("/acme/", headers=headers).json
    assert data["external"] == "https://app.example.com/acme/"
    assert data["secure"] is True
    headers["X-Forwarded-Host"] = "umbrella.example.com"
    assert echo_client.get("/", headers=headers).json["tenant"] == "umbrella"


def test_each_dispatcher_is_independent(write_tenants: Callable[[str], Path]) -> None:
    path = write_tenants("version: 1\ntenants: {acme: {app: tests.apps.echo, path: /acme}}")
    first = Dispatcher(load_tenants(path), background=False)
    second = Dispatcher(load_tenants(path), background=False)
    try:
        assert first.tenants["acme"].app is not None
        assert first.tenants["acme"].app is not second.tenants["acme"].app
    finally:
        first.close()
        second.close()


SPLIT_MOUNTS = ("/acme", "/eu/acme", "/t1")
SPLIT_PATHS = [
    "/acme", "/acme/", "/acme/x", "/acme//x", "/acme/x/", "/acme/x/y/z", "/acmex", "/acm",
    "/", "", "/eu/acme", "/eu/acme/", "/eu/acme/x/y", "/eu", "/eu/", "/eu/x", "/eu/acmex",
    "/acme/eu/acme", "/t1/t1", "/T1", "/caf\u00e9", "/acme/\u00e9", "//acme", "//acme/x",
    # No leading slash (a raw "GET xacme/x" to uWSGI): never a mount's, whatever follows.
    "acme", "xacme", "xacme/x", "eu/acme/x", "_dispatcher/health", "http://h/acme/x",
]  # fmt: skip


@pytest.mark.parametrize("script_name", ["", "/prefix", None])  # None: a server sets none
@pytest.mark.parametrize("path", SPLIT_PATHS)
def test_path_split_is_werkzeugs(
    make_dispatcher: Callable[[str], Dispatcher], path: str, script_name: str | None
) -> None:
    """DESIGN 5: path mounts split SCRIPT_NAME/PATH_INFO exactly as werkzeug's
    DispatcherMiddleware does (which the dispatcher no longer calls, for speed): the same
    mount chosen, or none, and the same two values handed to the tenant's app."""
    tenants = "".join(f"  m{i}: {{path: {m}}}\n" for i, m in enumerate(SPLIT_MOUNTS))
    dispatcher = make_dispatcher(
        f"version: 1\ndefaults: {{app: tests.apps.echo, lazy: true}}\ntenants:\n{tenants}"
    )
    seen: list[tuple[str, str, str]] = []

    def recorder(mount: str) -> Callable[..., list[bytes]]:
        def app(environ: dict[str, str], start_response: Callable[..., object]) -> list[bytes]:
            seen.append((mount, environ["SCRIPT_NAME"], environ["PATH_INFO"]))
            start_response("200 OK", [])
            return []

        return app

    werkzeug = DispatcherMiddleware(recorder("none"), {m: recorder(m) for m in SPLIT_MOUNTS})

    def split(app: Callable[..., object]) -> tuple[str, str, str]:
        """(mount, SCRIPT_NAME, PATH_INFO) the app was handed; ("none", "", "") if none."""
        seen.clear()
        environ = EnvironBuilder(path="/", headers={"Host": "localhost"}).get_environ()
        environ.update(SCRIPT_NAME=script_name, PATH_INFO=path, REQUEST_URI=path or "/")
        if script_name is None:
            del environ["SCRIPT_NAME"]
        app(environ, lambda *args: None)
        return seen[0] if seen and seen[0][0] != "none" else ("none", "", "")

    handles = list(dispatcher.tenants.values())
    try:
        for handle, mount in zip(handles, SPLIT_MOUNTS, strict=True):
            handle.app = recorder(mount)  # type: ignore[assignment]
        assert split(dispatcher) == split(werkzeug)
    finally:
        for handle in handles:
            handle.app = None
