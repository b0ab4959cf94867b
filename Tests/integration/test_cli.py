"""Command line (SPEC §1): `validate` exit codes and FILE:LINE:COL messages, `version`, start-up
with a bad config."""

import re
import subprocess
import textwrap

import pytest

from wire import free_port


def _run(bin_path, *args, timeout=5):
    return subprocess.run([bin_path, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(p)


VALID = """
workers: 1
log_level: info
admin: { address: 127.0.0.1:%(admin)d }
access_log: { format: json, path: stdout }
drain: { delay: 1s, timeout: 5s }
listeners:
  - name: inbound
    address: 127.0.0.1:%(port)d
    direction: inbound
    protocols: [http1]
    limits: { max_connections: 100, max_header_bytes: 64KiB, max_headers: 100, max_request_body: 1MiB }
    timeouts: { header_read: 10s, idle: 60s }
    forwarded_headers: true
    routes:
      - name: api
        match: { path_prefix: /api, host: "*.example.com", methods: [GET, POST], headers: { x-env: prod } }
        timeout: 15s
        rewrite: { path_prefix: /v2, host: app.internal }
        cluster: app
      - match: { path_prefix: / }
        cluster: app
clusters:
  - name: app
    endpoints: [127.0.0.1:8080]
    connect_timeout: 1s
    pool: { max_idle_per_endpoint: 64, idle_timeout: 60s }
"""


def _valid(tmp_path):
    return _write(tmp_path, VALID % {"admin": free_port(), "port": free_port()})


def _error_lines(stderr, path):
    return [ln for ln in stderr.splitlines() if ln.startswith(path + ":")]


def _assert_position(stderr, path, line, cols, words=()):
    lines = _error_lines(stderr, path)
    assert lines, f"no '{path}:LINE:COL: message' line on stderr:\n{stderr}"
    pat = re.compile(re.escape(path) + r":(\d+):(\d+): \S")
    found = []
    for ln in lines:
        m = pat.match(ln)
        assert m, f"malformed error line {ln!r}"
        found.append((int(m.group(1)), int(m.group(2)), ln))
    ok = [f for f in found if f[0] == line and f[1] in cols and all(w.lower() in f[2].lower() for w in words)]
    assert ok, f"expected an error at line {line}, column in {cols}, mentioning {words}; got:\n{stderr}"


def test_version(outrider_bin):
    r = _run(outrider_bin, "version")
    assert r.returncode == 0, r
    assert re.fullmatch(r"outrider \d+\.\d+\.\d+\S*\n", r.stdout), repr(r.stdout)


def test_validate_valid_config(outrider_bin, tmp_path):
    path = _valid(tmp_path)
    r = _run(outrider_bin, "validate", "--config", path)
    assert r.returncode == 0, f"rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"


def test_validate_unknown_key(outrider_bin, tmp_path):
    path = _write(tmp_path, """
        listeners:
          - name: inbound
            address: 127.0.0.1:15006
            bogus_key: 1
            routes:
              - match: { path_prefix: / }
                cluster: app
        clusters:
          - name: app
            endpoints: [127.0.0.1:8080]
        """)
    r = _run(outrider_bin, "validate", "--config", path)
    assert r.returncode == 1, f"rc={r.returncode} stderr={r.stderr}"
    _assert_position(r.stderr, path, 4, (5,), ("bogus_key",))


def test_validate_reports_every_error(outrider_bin, tmp_path):
    path = _write(tmp_path, """
        workers: lots
        listeners:
          - name: inbound
            address: 127.0.0.1:15006
            timeouts: { header_read: 5parsecs }
            routes:
              - match: { path_prefix: / }
                cluster: nowhere
        clusters:
          - name: app
            endpoints: [127.0.0.1:8080]
        """)
    r = _run(outrider_bin, "validate", "--config", path)
    assert r.returncode == 1, r
    _assert_position(r.stderr, path, 1, (1, 10), ())             # workers: wrong type
    _assert_position(r.stderr, path, 5, (17, 30), ())            # bad duration
    _assert_position(r.stderr, path, 8, (9, 18), ("nowhere",))   # missing cluster


UNSUPPORTED = [
    # (id, where the snippet goes, the snippet, its key)
    # the health probe speaks HTTP/1.1: refused on HTTP/2-only clusters
    ("health-check-on-h2c", "cluster", "    health_check: { path: /healthz }\n    protocol: h2c\n", "health_check"),
    ("health-check-on-h2", "cluster", "    health_check: { path: /healthz }\n    protocol: h2\n", "health_check"),
]


@pytest.mark.parametrize("where,snippet,key", [u[1:] for u in UNSUPPORTED], ids=[u[0] for u in UNSUPPORTED])
def test_validate_not_supported_yet(outrider_bin, tmp_path, where, snippet, key):
    lines = [
        "listeners:\n",
        "  - name: inbound\n",
        "    address: 127.0.0.1:15006\n",
        "    routes:\n",
        "      - match: { path_prefix: / }\n",
        "        cluster: app\n",
        "clusters:\n",
        "  - name: app\n",
        "    endpoints: [127.0.0.1:8080]\n",
    ]
    at = {"listener": 3, "route": 6, "cluster": 9}[where]  # insert after this many lines
    lines.insert(at, snippet)
    path = tmp_path / "c.yaml"
    path.write_text("".join(lines))
    path = str(path)
    line = at + 1
    key_col = len(snippet) - len(snippet.lstrip(" ")) + 1
    value_col = key_col + len(key) + 2
    r = _run(outrider_bin, "validate", "--config", path)
    assert r.returncode == 1, f"rc={r.returncode} stderr={r.stderr}"
    _assert_position(r.stderr, path, line, (key_col, value_col), ("not supported yet",))


def test_run_with_bad_config_exits_1(outrider_bin, tmp_path):
    path = _write(tmp_path, """
        listeners:
          - name: inbound
            address: 127.0.0.1:%d
            routes:
              - match: { path_prefix: / }
                cluster: missing
        clusters: []
        """ % free_port())
    r = _run(outrider_bin, "run", "--config", path)
    assert r.returncode == 1, f"rc={r.returncode} stderr={r.stderr}"
    _assert_position(r.stderr, path, 6, (9, 18), ("missing",))


def test_listener_bind_failure_exits_2(outrider_bin, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        path = _write(tmp_path, """
            admin: { address: 127.0.0.1:%d }
            listeners:
              - name: inbound
                address: 127.0.0.1:%d
                routes:
                  - match: { path_prefix: / }
                    cluster: app
            clusters:
              - name: app
                endpoints: [127.0.0.1:8080]
            """ % (free_port(), port))
        r = _run(outrider_bin, "run", "--config", path)
        assert r.returncode == 2, f"rc={r.returncode} stderr={r.stderr}"
        assert f"127.0.0.1:{port}" in r.stderr, r.stderr
    finally:
        s.close()
