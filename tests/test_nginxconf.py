"""``python -m dispatcher nginx-config`` (DESIGN section 13): what it prints for each kind of
tenants file, the mistakes it refuses, and real nginx's ``nginx -t`` on its output.

The shipped examples in ``deploy/nginx/`` are regenerated here and must be identical, so they
cannot drift from the generator. Running nginx needs /usr/sbin/nginx: those tests skip without
it, except under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from dispatcher import load_tenants
from dispatcher.cli import main
from dispatcher.nginxconf import NginxConfigError, Tls, _fits, nginx_config, parse_node
from tests.e2e.servers import write_nginx_conf
from tests.e2e.stack import make_certificate

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "nginx"
LETSENCRYPT = "/etc/letsencrypt/live/example.com"
TLS_OPTIONS = [
    "--tls",
    "--cert",
    f"{LETSENCRYPT}/fullchain.pem",
    "--key",
    f"{LETSENCRYPT}/privkey.pem",
]
#: deploy/nginx/<example> -> the nodes it was generated for (with TLS_OPTIONS).
EXAMPLES = {
    "one-node.conf": ["unix:/run/dispatcher/uwsgi.sock"],
    "three-nodes.conf": ["10.0.0.11:3031", "10.0.0.12:3031", "10.0.0.13:3031"],
}

PATHS_ONLY = """
    version: 1
    server_names: [app.example.com]
    defaults: {app: tests.apps.echo}
    tenants:
      acme: {path: /acme}
      globex: {path: /eu/globex}
      initech: {path: /eu/west/initech, maintenance: true}
      hooli: {path: /hooli, enabled: false}
"""
HOSTS_ONLY = """
    version: 1
    base_domain: example.com
    defaults: {app: tests.apps.echo}
    tenants:
      umbrella: {subdomain: umbrella, hosts: [umbrella.com]}
      default: {hosts: [default]}
"""
MIXED = """
    version: 1
    base_domain: example.com
    server_names: [app.example.com, www.example.com]
    proxy: {x_for: 1, x_proto: 1, x_host: 1}
    defaults: {app: tests.apps.echo}
    tenants:
      acme: {path: /acme}
      umbrella: {subdomain: umbrella}
"""
ANY_HOST = """
    version: 1
    base_domain: example.com
    defaults: {app: tests.apps.echo}
    tenants:
      acme: {path: /acme}
      umbrella: {subdomain: umbrella}
"""


def render(write_tenants: Callable[[str], Path], text: str, nodes: list[str], **kw: object) -> str:
    return nginx_config(load_tenants(write_tenants(text)), nodes, **kw)  # type: ignore[arg-type]


def directives(config: str) -> list[str]:
    """The configuration without comments or blank lines, one stripped line each."""
    lines = (line.partition("#")[0].strip() for line in config.splitlines())
    return [line for line in lines if line]


def block(config: str, opening: str) -> list[str]:
    """The directive lines of the block that starts with ``opening`` (e.g. ``map $host ...``)."""
    lines = directives(config)
    start = lines.index(opening + " {")
    depth, body = 1, []
    for line in lines[start + 1 :]:
        depth += line.count("{") - line.count("}")
        if depth == 0:
            return body
        body.append(line)
    raise AssertionError(f"unclosed block {opening!r}")


def servers(config: str) -> list[list[str]]:
    """Every ``server {}`` block (the upstream's ``server`` lines are not blocks)."""
    lines, found = directives(config), []
    for i, line in enumerate(lines):
        if line == "server {":
            found.append(block("\n".join(lines[i:]), "server"))
    return found


# --- parsing the nodes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, address",
    [
        ("10.0.0.11:3031", "10.0.0.11:3031"),
        ("Node-1.Internal:03031", "node-1.internal:3031"),
        ("[FD00::0011]:3031", "[fd00::11]:3031"),
        ("unix:/run/dispatcher/uwsgi.sock", "unix:/run/dispatcher/uwsgi.sock"),
    ],
)
def test_node_addresses_are_written_as_nginx_reads_them(given: str, address: str) -> None:
    assert parse_node(given) == address


@pytest.mark.parametrize(
    "given, message",
    [
        ("10.0.0.11", "--node '10.0.0.11' is not HOST:PORT (for example 10.0.0.11:3031"),
        ("10.0.0.11:", "--node '10.0.0.11:': the port must be a number from 1 to 65535"),
        ("10.0.0.11:0", "the port must be a number from 1 to 65535"),
        ("10.0.0.11:65536", "the port must be a number from 1 to 65535"),
        (":3031", "is not HOST:PORT"),
        ("http://10.0.0.11:3031", "is not HOST:PORT"),
        ("::1:3031", "an IPv6 address goes in brackets: [fd00::11]:3031"),
        ("[::g]:3031", "'[::g]' is no IPv6 address"),
        ("300.0.0.1:3031", "'300.0.0.1' is no IPv4 address"),
        ("node_1:3031", "'node_1' is not an IP address or host name"),
        ("a;b:3031", "is not an IP address or host name"),
        ("unix:run/x.sock", "a unix socket needs an absolute path"),
        ("unix:/run/my socket", "a unix socket needs an absolute path"),
        ("unix:/run/$x.sock", "a unix socket needs an absolute path"),
    ],
)
def test_bad_node_is_refused_saying_why(given: str, message: str) -> None:
    with pytest.raises(NginxConfigError) as caught:
        parse_node(given)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "cert, message",
    [
        ("fullchain.pem", "--cert 'fullchain.pem' is not an absolute path"),
        ("/etc/my certs/a.pem", "has characters nginx would misread"),
        ('/etc/"a.pem', "has characters nginx would misread"),
        ("/etc/$host.pem", "has characters nginx would misread"),
    ],
)
def test_bad_certificate_path_is_refused(cert: str, message: str) -> None:
    with pytest.raises(NginxConfigError, match=re.escape(message)):
        Tls(cert, "/etc/key.pem")


# --- what it prints ------------------------------------------------------------------------


def test_tenants_are_named_by_host_then_by_path_mount(write_tenants: Callable[..., Path]) -> None:
    config = render(write_tenants, MIXED.replace("{path: /acme}", "{path: /eu/acme}"), ["a:1"])
    assert block(config, "map $host $dispatcher_host_tenant") == [
        'default "";',
        "umbrella.example.com umbrella;",
    ]
    assert block(config, "map $uri $dispatcher_prefix_2") == [
        'default "";',
        '"~^(/[^/]+/[^/]+)" $1;',
    ]
    assert block(config, "map $dispatcher_prefix_2 $dispatcher_path_tenant_2") == [
        'default "";',
        "/eu/acme acme;",
    ]
    assert block(config, "map $dispatcher_host_tenant $dispatcher_tenant") == [
        '"" $dispatcher_path_tenant_2;',
        "default $dispatcher_host_tenant;",
    ]
    assert "hash $dispatcher_tenant consistent;" in block(config, "upstream dispatcher_nodes")


def test_mounts_of_every_depth_are_chained(write_tenants: Callable[..., Path]) -> None:
    """One map per depth of mount; each falls back to the one before (mounts never nest)."""
    config = render(write_tenants, PATHS_ONLY, ["a:1"])
    assert block(config, "map $dispatcher_prefix_1 $dispatcher_path_tenant_1") == [
        'default "";',
        "/acme acme;",  # hooli is disabled: not mounted, not here
    ]
    assert block(config, "map $dispatcher_prefix_2 $dispatcher_path_tenant_2") == [
        "default $dispatcher_path_tenant_1;",
        "/eu/globex globex;",
    ]
    assert block(config, "map $dispatcher_prefix_3 $dispatcher_path_tenant_3") == [
        "default $dispatcher_path_tenant_2;",
        "/eu/west/initech initech;",  # in maintenance, still mounted (503 from its node)
    ]
    assert '"" $dispatcher_path_tenant_3;' in block(
        config, "map $dispatcher_host_tenant $dispatcher_tenant"
    )
    assert "hooli" not in config


def test_a_host_named_like_a_map_parameter_is_escaped(write_tenants: Callable[..., Path]) -> None:
    config = render(write_tenants, HOSTS_ONLY, ["a:1"])
    assert "\\default default;" in block(config, "map $host $dispatcher_host_tenant")


def test_server_names_or_a_catch_all(write_tenants: Callable[..., Path]) -> None:
    config = render(write_tenants, MIXED, ["a:1"])
    catch_all, tenants = servers(config)
    assert catch_all == [
        "listen 80 default_server;",
        "server_name _;",
        "server_tokens off;",
        "return 404;",
    ]
    names = [line for line in tenants if line.startswith(("listen", "server_name"))]
    assert names == [
        "listen 80;",
        "server_name umbrella.example.com;",
        "server_name app.example.com;",
        "server_name www.example.com;",
    ]


def test_without_server_names_path_tenants_answer_on_any_host(
    write_tenants: Callable[..., Path],
) -> None:
    """As the file says: the server that passes requests on is nginx's default one."""
    (only,) = servers(render(write_tenants, ANY_HOST, ["a:1"]))
    assert only[:2] == ["listen 80 default_server;", "server_name _;"]
    redirect, tenants = servers(
        render(write_tenants, ANY_HOST, ["a:1"], tls=Tls("/c.pem", "/k.pem"))
    )
    assert redirect[:2] == ["listen 80 default_server;", "server_name _;"]
    assert tenants[:2] == ["listen 443 ssl default_server;", "server_name _;"]


def test_tls_redirects_plain_http_and_refuses_unknown_names(
    write_tenants: Callable[..., Path],
) -> None:
    config = render(write_tenants, MIXED, ["a:1"], tls=Tls("/etc/c.pem", "/etc/k.pem"))
    catch_all, redirect, tenants = servers(config)
    assert "ssl_reject_handshake on;" in catch_all
    assert catch_all[:2] == ["listen 80 default_server;", "listen 443 ssl default_server;"]
    assert redirect[0] == "listen 80;"
    assert redirect[-1] == "return 301 https://$host$request_uri;"
    assert tenants[0] == "listen 443 ssl;"
    assert "ssl_certificate /etc/c.pem;" in tenants
    assert "ssl_certificate_key /etc/k.pem;" in tenants


def test_health_goes_to_a_node_and_the_rest_of_the_prefix_is_404(
    write_tenants: Callable[..., Path],
) -> None:
    config = render(write_tenants, MIXED, ["a:1"])
    assert block(config, "location = /_dispatcher/health") == ["uwsgi_pass dispatcher_nodes;"]
    assert block(config, "location = /_dispatcher") == ["return 404;"]
    assert block(config, "location ^~ /_dispatcher/") == ["return 404;"]
    assert block(config, "location /") == ["uwsgi_pass dispatcher_nodes;"]


def test_a_node_that_is_down_is_skipped_at_once(write_tenants: Callable[..., Path]) -> None:
    config = render(write_tenants, MIXED, ["10.0.0.11:3031", "10.0.0.12:3031", "unix:/r/u.sock"])
    assert block(config, "upstream dispatcher_nodes") == [
        "zone dispatcher_nodes 64k;",
        "hash $dispatcher_tenant consistent;",
        "server 10.0.0.11:3031 max_fails=1 fail_timeout=10s;",
        "server 10.0.0.12:3031 max_fails=1 fail_timeout=10s;",
        "server unix:/r/u.sock max_fails=1 fail_timeout=10s;",
    ]
    (_, tenants) = servers(config)
    assert "uwsgi_next_upstream error timeout;" in tenants
    assert "uwsgi_next_upstream_tries 3;" in tenants


def forwarded(config: str) -> dict[str, str]:
    params = [line.split(None, 2)[1:] for line in directives(config) if "HTTP_X_FORWARDED" in line]
    return {name: value.rstrip(";") for name, value in params if name.startswith("HTTP_")}


def test_forwarded_headers_exactly_as_proxy_trusts_them(
    write_tenants: Callable[..., Path],
) -> None:
    config = render(write_tenants, MIXED, ["a:1"])
    assert forwarded(config) == {
        "HTTP_X_FORWARDED_FOR": "$remote_addr",
        "HTTP_X_FORWARDED_PROTO": "$scheme",
        "HTTP_X_FORWARDED_HOST": "$dispatcher_host",
        "HTTP_X_FORWARDED_PORT": '"" if_not_empty',
        "HTTP_X_FORWARDED_PREFIX": '"" if_not_empty',
    }


def test_without_proxy_no_forwarded_header_is_passed(write_tenants: Callable[..., Path]) -> None:
    config = render(write_tenants, ANY_HOST, ["a:1"])
    assert set(forwarded(config).values()) == {'"" if_not_empty'}


def test_a_balancer_in_front_is_appended_to(write_tenants: Callable[..., Path]) -> None:
    text = MIXED.replace("{x_for: 1, x_proto: 1, x_host: 1}", "{x_for: 2, x_proto: 2, x_port: 1}")
    config = render(write_tenants, text, ["a:1"])
    assert forwarded(config) == {
        "HTTP_X_FORWARDED_FOR": "$proxy_add_x_forwarded_for",
        "HTTP_X_FORWARDED_PROTO": "$dispatcher_forwarded_proto",
        "HTTP_X_FORWARDED_HOST": '"" if_not_empty',
        "HTTP_X_FORWARDED_PORT": "$server_port",
        "HTTP_X_FORWARDED_PREFIX": '"" if_not_empty',
    }
    assert block(config, "map $http_x_forwarded_proto $dispatcher_forwarded_proto") == [
        '"" $scheme;',
        'default "$http_x_forwarded_proto, $scheme";',
    ]


def test_hash_sizes_only_when_the_defaults_would_not_do(
    write_tenants: Callable[..., Path],
) -> None:
    assert "hash_max_size" not in render(write_tenants, MIXED, ["a:1"])
    long_host = "a" * 60 + ".example.com"
    config = render(
        write_tenants, HOSTS_ONLY.replace("hosts: [default]", f"hosts: [{long_host}]"), ["a:1"]
    )
    # A 72-character name takes 88 bytes of a bucket: nginx's 64 cannot hold it at all (it
    # would refuse to start); buckets get room for four such names.
    assert "server_names_hash_bucket_size 512;" in directives(config)
    assert "map_hash_bucket_size 512;" in directives(config)


# --- the command ---------------------------------------------------------------------------


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_command_prints_the_config(write_tenants: Callable[..., Path]) -> None:
    path = write_tenants(MIXED)
    code, output = invoke("-f", str(path), "nginx-config", "--node", "10.0.0.11:3031")
    assert code == 0
    assert output == nginx_config(load_tenants(path), ["10.0.0.11:3031"])
    assert f"python -m dispatcher -f {path} nginx-config --node 10.0.0.11:3031\n" in output


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "Missing option '--node'"),
        (["--node", "10.0.0.11"], "--node '10.0.0.11' is not HOST:PORT"),
        (["--node", "a:1", "--node", "A:01"], "--node a:1 is given more than once"),
        (["--node", "a:1", "--tls"], "--tls needs --cert PATH and --key PATH"),
        (["--node", "a:1", "--tls", "--cert", "/c.pem"], "--tls needs --cert PATH and --key PATH"),
        (
            ["--node", "a:1", "--cert", "/c.pem", "--key", "/k.pem"],
            "--cert and --key go with --tls",
        ),
        (["--node", "a:1", "--tls", "--cert", "c.pem", "--key", "/k"], "is not an absolute path"),
    ],
)
def test_usage_mistakes_exit_2(
    write_tenants: Callable[..., Path], args: list[str], message: str
) -> None:
    code, output = invoke("-f", str(write_tenants(MIXED)), "nginx-config", *args)
    assert code == 2
    assert message in output
    assert "Traceback" not in output


def test_invalid_tenants_file_exits_1_with_every_problem(
    write_tenants: Callable[..., Path],
) -> None:
    path = write_tenants(MIXED.replace("{path: /acme}", "{pth: /acme}"))
    code, output = invoke("-f", str(path), "nginx-config", "--node", "a:1")
    assert code == 1
    assert f"{path} is not valid" in output
    assert "unknown field 'pth' (did you mean 'path'?)" in output
    code, output = invoke("-f", str(path.with_name("none.yaml")), "nginx-config", "--node", "a:1")
    assert code == 1
    assert "cannot read the tenants file" in output


def test_a_prefix_trusted_twice_cannot_be_generated(write_tenants: Callable[..., Path]) -> None:
    path = write_tenants(MIXED.replace("x_host: 1}", "x_host: 1, x_prefix: 2}"))
    code, output = invoke("-f", str(path), "nginx-config", "--node", "a:1")
    assert code == 1
    assert "proxy: x_prefix is 2, but this nginx adds no X-Forwarded-Prefix" in output


def test_command_as_a_real_subprocess(write_tenants: Callable[..., Path]) -> None:
    path = write_tenants(MIXED)
    argv = [sys.executable, "-m", "dispatcher", "nginx-config", "-f", str(path)]
    done = subprocess.run([*argv, "--node", "a:1"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == nginx_config(load_tenants(path), ["a:1"])
    bad = subprocess.run([*argv, "--node", "a"], capture_output=True, text=True, cwd=ROOT)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert "Error: --node 'a' is not HOST:PORT" in bad.stderr


@pytest.mark.parametrize("example", EXAMPLES)
def test_shipped_examples_are_the_generators_output(example: str) -> None:
    nodes = [arg for node in EXAMPLES[example] for arg in ("--node", node)]
    file = "deploy/nginx/tenants.example.yaml"
    code, output = invoke("-f", file, "nginx-config", *nodes, *TLS_OPTIONS)
    assert code == 0, output
    assert (DEPLOY / example).read_text() == output, (
        f"deploy/nginx/{example} is not what nginx-config prints: regenerate it with the "
        "command in its first lines (from the project folder)"
    )


# --- nginx -t ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx() -> str:
    """The nginx binary; skip without it or openssl (fail under CI=true)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None or shutil.which("openssl") is None:
        reason = "nginx -t needs nginx and openssl (apt-get install nginx openssl)"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"{reason}; under CI=true no test may skip")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def certs(nginx: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fullchain.pem and privkey.pem (self-signed), which nginx -t reads."""
    return make_certificate(tmp_path_factory.mktemp("certs"), "openssl")


def nginx_test(nginx: str, folder: Path, config: str) -> str:
    """``nginx -t`` on the config inside a whole nginx.conf; its output (it must pass)."""
    argv = write_nginx_conf(nginx, folder, config)
    done = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stderr


def many_tenants(count: int, domain: str = "customers.example.com") -> str:
    """Half by path (some two segments deep), half by subdomain, every one lazy."""
    lines = ["version: 1", f"base_domain: {domain}", "server_names: [app.example.com]"]
    lines += ["defaults: {app: tests.apps.echo, lazy: true}", "tenants:"]
    for i in range(count // 2):
        path = f"/eu/p{i:05d}" if i % 3 == 0 else f"/p{i:05d}"
        lines.append(f"  p{i:05d}: {{path: {path}}}")
        lines.append(f"  s{i:05d}: {{subdomain: s{i:05d}}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(PATHS_ONLY, id="paths"),
        pytest.param(HOSTS_ONLY, id="hosts"),
        pytest.param(MIXED, id="mixed"),
        pytest.param(ANY_HOST, id="no-server-names"),
        pytest.param(
            MIXED.replace("x_host: 1}", "x_host: 2, x_port: 3}").replace("x_for: 1", "x_for: 2"),
            id="balancer-in-front",
        ),
        pytest.param(many_tenants(80), id="80"),
        pytest.param(many_tenants(300, "x" * 60 + ".example.com"), id="300-long-names"),
        pytest.param(many_tenants(600), id="600"),
        pytest.param(many_tenants(3000), id="3000"),
        pytest.param(many_tenants(10_000), id="10000"),
    ],
)
@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_nginx_accepts_the_output(
    nginx: str,
    certs: Path,
    tmp_path: Path,
    write_tenants: Callable[..., Path],
    text: str,
    tls: bool,
) -> None:
    files = Tls(str(certs / "fullchain.pem"), str(certs / "privkey.pem")) if tls else None
    nodes = ["127.0.0.1:3031", "[::1]:3032", f"unix:{tmp_path}/node.sock"]
    config = render(write_tenants, text, nodes, tls=files)
    output = nginx_test(nginx, tmp_path / "nginx", config)
    # Not even a warning: "could not build optimal server_names_hash" would be one.
    assert "[warn]" not in output and "[emerg]" not in output, output


def test_nginx_accepts_the_shipped_examples(nginx: str, certs: Path, tmp_path: Path) -> None:
    """With only their certificate paths changed (nginx -t reads the certificates)."""
    for example in EXAMPLES:
        config = (DEPLOY / example).read_text().replace(LETSENCRYPT, str(certs))
        output = nginx_test(nginx, tmp_path / example, config)
        assert "[warn]" not in output, output


def test_hash_sizes_are_set_exactly_when_nginxs_defaults_would_warn(
    nginx: str, tmp_path: Path
) -> None:
    """The generator's copy of nginx's table search agrees with nginx itself, both ways."""
    outcomes = set()
    for count, length in [(20, 12), (100, 20), (200, 40), (300, 12), (1000, 28), (1500, 12)]:
        names = [f"h{i:04d}" + "z" * (length - 9) + ".com" for i in range(count)]
        config = "server { listen 127.0.0.1:1 default_server; server_name _; return 404; }\n"
        config += "server { listen 127.0.0.1:1; return 200;\n"
        config += "".join(f"server_name {name};\n" for name in names) + "}\n"
        config += 'map $host $m { default "";\n' + "".join(f"{name} m;\n" for name in names)
        config += "}\nserver { listen 127.0.0.1:2; return 200 $m; }\n"
        argv = write_nginx_conf(nginx, tmp_path / f"{count}-{length}", config)
        output = subprocess.run([*argv, "-t"], capture_output=True, text=True).stderr
        server_names_fit = _fits([*names, "_"], 512, 64)
        maps_fit = _fits(names, 2048, 64)
        assert server_names_fit == ("server_names_hash" not in output), (count, length)
        assert maps_fit == ("map_hash" not in output), (count, length)
        outcomes |= {server_names_fit, maps_fit}
    assert outcomes == {True, False}  # both answers were put to the test
