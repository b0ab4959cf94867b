"""Transparent mode (SPEC §10): `outrider iptables` prints the nat rules as an iptables-restore
script, rejects bad arguments with exit 1, reports a failing iptables-restore with its stderr and
exit status, and, as root, installs the rules inside a throwaway network namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

TYPICAL = ["iptables", "--inbound-port", "15006", "--outbound-port", "15001", "--uid", "1337",
           "--exclude-inbound-ports", "15021,15020"]

TYPICAL_SCRIPT = """\
# outrider iptables, iptables: inbound TCP -> 15006 (every port but 15000,15001,15006,15020,15021); outbound TCP -> 15001 (except uid 1337, loopback)
*nat
:OUTRIDER_INBOUND - [0:0]
:OUTRIDER_IN_REDIRECT - [0:0]
:OUTRIDER_OUTPUT - [0:0]
:OUTRIDER_REDIRECT - [0:0]
-A PREROUTING -p tcp -j OUTRIDER_INBOUND
-A OUTPUT -p tcp -j OUTRIDER_OUTPUT
-A OUTRIDER_INBOUND -p tcp -m tcp --dport 15000 -j RETURN
-A OUTRIDER_INBOUND -p tcp -m tcp --dport 15001 -j RETURN
-A OUTRIDER_INBOUND -p tcp -m tcp --dport 15006 -j RETURN
-A OUTRIDER_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A OUTRIDER_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A OUTRIDER_INBOUND -p tcp -j OUTRIDER_IN_REDIRECT
-A OUTRIDER_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTRIDER_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j OUTRIDER_IN_REDIRECT
-A OUTRIDER_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A OUTRIDER_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A OUTRIDER_OUTPUT -d 127.0.0.1/32 -j RETURN
-A OUTRIDER_OUTPUT -j OUTRIDER_REDIRECT
-A OUTRIDER_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
"""

CHAINS = ["OUTRIDER_INBOUND", "OUTRIDER_IN_REDIRECT", "OUTRIDER_OUTPUT", "OUTRIDER_REDIRECT"]


def _run(args, *, env=None, timeout=20, input_text=None):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          input=input_text, stdin=None if input_text is not None else subprocess.DEVNULL)


def _rules(text):
    return [line for line in text.splitlines() if line.startswith("-A ")]


# --- printing -------------------------------------------------------------------------------


def test_prints_typical_rules(outrider_bin):
    r = _run([outrider_bin, *TYPICAL])
    assert r.returncode == 0, r
    assert r.stdout == TYPICAL_SCRIPT
    assert r.stderr == ""


def test_defaults_match_spec_ports(outrider_bin):
    """--inbound-port and --outbound-port default to 15006 and 15001; --uid is required."""
    r = _run([outrider_bin, "iptables", "--uid", "1337", "--exclude-inbound-ports", "15021,15020"])
    assert r.returncode == 0, r
    assert r.stdout == TYPICAL_SCRIPT


def test_output_is_deterministic(outrider_bin):
    """Order of the arguments' lists and repeats do not change the text."""
    a = _run([outrider_bin, "iptables", "--uid", "7", "--exclude-inbound-ports", "22,15021,8443",
              "--exclude-outbound-ports", "5432,443"])
    b = _run([outrider_bin, "iptables", "--exclude-outbound-ports", "443, 5432,443", "--uid", "7",
              "--exclude-inbound-ports", "8443,22,15021,22"])
    assert a.returncode == b.returncode == 0, (a, b)
    assert a.stdout == b.stdout


def test_excluded_ports(outrider_bin):
    r = _run([outrider_bin, "iptables", "--inbound-port", "16006", "--outbound-port", "16001", "--uid", "1000",
              "--admin-port", "9901", "--exclude-inbound-ports", "22", "--exclude-outbound-ports", "5432,443"])
    assert r.returncode == 0, r
    rules = _rules(r.stdout)
    inbound = [x for x in rules if x.startswith("-A OUTRIDER_INBOUND ")]
    assert inbound == [f"-A OUTRIDER_INBOUND -p tcp -m tcp --dport {p} -j RETURN" for p in (22, 9901, 16001, 16006)] + [
        "-A OUTRIDER_INBOUND -p tcp -j OUTRIDER_IN_REDIRECT"]
    output = [x for x in rules if x.startswith("-A OUTRIDER_OUTPUT ")]
    # the port exclusions come first: first match wins, even for the proxy's own user
    assert output[:2] == ["-A OUTRIDER_OUTPUT -p tcp -m tcp --dport 443 -j RETURN",
                          "-A OUTRIDER_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN"]
    assert output[-1] == "-A OUTRIDER_OUTPUT -j OUTRIDER_REDIRECT"
    assert "-A OUTRIDER_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006" in rules
    assert "-A OUTRIDER_REDIRECT -p tcp -j REDIRECT --to-ports 16001" in rules
    assert "-A OUTRIDER_OUTPUT -m owner --uid-owner 1000 -j RETURN" in rules


def test_include_inbound_ports(outrider_bin):
    r = _run([outrider_bin, "iptables", "--uid", "1337", "--include-inbound-ports", "9090,8080"])
    assert r.returncode == 0, r
    assert [x for x in _rules(r.stdout) if x.startswith("-A OUTRIDER_INBOUND ")] == [
        "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 8080 -j OUTRIDER_IN_REDIRECT",
        "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 9090 -j OUTRIDER_IN_REDIRECT",
    ]
    none = _run([outrider_bin, "iptables", "--uid", "1337", "--include-inbound-ports", ""])
    assert none.returncode == 0, none
    assert not [x for x in _rules(none.stdout) if x.startswith(("-A PREROUTING", "-A OUTRIDER_INBOUND"))]
    assert "-A OUTPUT -p tcp -j OUTRIDER_OUTPUT" in _rules(none.stdout)


def test_ipv6(outrider_bin):
    r = _run([outrider_bin, *TYPICAL, "--ipv6"])
    assert r.returncode == 0, r
    assert "127.0.0.1" not in r.stdout
    expected = TYPICAL_SCRIPT.replace("127.0.0.1/32", "::1/128").replace(
        "# outrider iptables, iptables:", "# outrider iptables, ip6tables:")
    assert r.stdout == expected
    assert "-A OUTRIDER_OUTPUT ! -d ::1/128 -o lo -m owner --uid-owner 1337 -j OUTRIDER_IN_REDIRECT" in r.stdout


# --- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--uid", "1337", "--inbound-port", "0"], "--inbound-port: expected a port from 1 to 65535, got '0'"),
    (["--uid", "1337", "--outbound-port", "65536"], "--outbound-port: expected a port from 1 to 65535, got '65536'"),
    (["--uid", "1337", "--inbound-port", "http"], "--inbound-port: expected a port from 1 to 65535, got 'http'"),
    (["--uid", "-1"], "--uid: expected a numeric user id from 0 to 4294967294, got '-1'"),
    (["--uid", "istio-proxy"], "--uid: expected a numeric user id from 0 to 4294967294, got 'istio-proxy'"),
    (["--uid", "1337", "--exclude-inbound-ports", "15020,,15021"], "--exclude-inbound-ports: empty entry in '15020,,15021'"),
    (["--uid", "1337", "--exclude-outbound-ports", "443,99999"],
     "--exclude-outbound-ports: expected ports from 1 to 65535 separated by commas, got '99999'"),
    (["--uid", "1337", "--include-inbound-ports", "80;443"], "--include-inbound-ports: expected ports from 1 to 65535"),
    (["--uid", "1337", "--inbound-port", "15001"], "--inbound-port and --outbound-port must differ"),
    (["--uid", "1337", "--include-inbound-ports", "8080,15000"], "--include-inbound-ports: port 15000 is one of the proxy's own ports"),
    (["--uid", "1337", "--include-inbound-ports", "8080", "--exclude-inbound-ports", "8080"],
     "--include-inbound-ports: port 8080 is also in --exclude-inbound-ports"),
])
def test_bad_arguments_exit_1(outrider_bin, args, message):
    r = _run([outrider_bin, "iptables", *args])
    assert r.returncode == 1, r
    assert message in r.stderr, r.stderr
    assert r.stdout == ""


def test_missing_uid_and_unknown_flag_exit_1(outrider_bin):
    r = _run([outrider_bin, "iptables", "--inbound-port", "15006"])
    assert r.returncode == 1, r
    assert "--uid" in r.stderr
    r = _run([outrider_bin, "iptables", "--uid", "1337", "--redirect-everything"])
    assert r.returncode == 1, r
    assert "--redirect-everything" in r.stderr


# --- --apply against stand-in tools ----------------------------------------------------------


def _fake_tools(tmp_path, *, restore_exit, restore_stderr="", saved=""):
    """A PATH holding only a fake iptables-restore (records its arguments and stdin, prints to
    stderr, exits as told) and a fake iptables-save (prints `saved`)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "restore"
    restore = bindir / "iptables-restore"
    restore.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        open({str(record) + '.args'!r}, "w").write(" ".join(sys.argv[1:]))
        open({str(record) + '.stdin'!r}, "w").write(sys.stdin.read())
        sys.stderr.write({restore_stderr!r})
        sys.exit({restore_exit})
        """))
    save = bindir / "iptables-save"
    save.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({saved!r})\n")
    for tool in (restore, save):
        tool.chmod(0o755)
    env = dict(os.environ, PATH=str(bindir))
    return env, record


def test_apply_feeds_the_script_to_iptables_restore(outrider_bin, tmp_path):
    env, record = _fake_tools(tmp_path, restore_exit=0)
    r = _run([outrider_bin, *TYPICAL, "--apply"], env=env)
    assert r.returncode == 0, r
    assert (tmp_path / "restore.args").read_text() == "--noflush"
    assert (tmp_path / "restore.stdin").read_text() == TYPICAL_SCRIPT
    assert r.stdout == TYPICAL_SCRIPT  # what was installed, for the init container's log


def test_apply_skips_jumps_already_installed(outrider_bin, tmp_path):
    saved = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -j OUTRIDER_INBOUND\n" \
            "-A OUTPUT -p tcp -j OUTRIDER_OUTPUT\nCOMMIT\n"
    env, _ = _fake_tools(tmp_path, restore_exit=0, saved=saved)
    r = _run([outrider_bin, *TYPICAL, "--apply"], env=env)
    assert r.returncode == 0, r
    fed = (tmp_path / "restore.stdin").read_text()
    assert "-A PREROUTING" not in fed and "-A OUTPUT " not in fed
    assert _rules(fed) == _rules(TYPICAL_SCRIPT)[2:]


def test_apply_reports_tool_failure(outrider_bin, tmp_path):
    env, _ = _fake_tools(tmp_path, restore_exit=3,
                         restore_stderr="iptables-restore v1.8.9 (nf_tables): line 9 failed\n")
    r = _run([outrider_bin, *TYPICAL, "--apply"], env=env)
    assert r.returncode == 1, r
    assert "iptables-restore --noflush failed (exit status 3)" in r.stderr
    assert "line 9 failed" in r.stderr
    assert r.stdout == ""


def test_apply_ipv6_uses_ip6tables_restore(outrider_bin, tmp_path):
    env, _ = _fake_tools(tmp_path, restore_exit=0)  # only iptables-restore on PATH
    r = _run([outrider_bin, *TYPICAL, "--ipv6", "--apply"], env=env)
    assert r.returncode == 1, r
    assert "could not start ip6tables-restore: No such file or directory" in r.stderr


def test_apply_without_iptables_installed(outrider_bin, tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))
    r = _run([outrider_bin, *TYPICAL, "--apply"], env=env)
    assert r.returncode == 1, r
    assert "could not start iptables-restore: No such file or directory" in r.stderr


def test_apply_tool_that_ignores_its_input(outrider_bin, tmp_path):
    """A tool exiting without reading stdin must not kill outrider with SIGPIPE."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "iptables-restore"
    tool.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write('refused\\n')\nsys.exit(4)\n")
    tool.chmod(0o755)
    r = _run([outrider_bin, *TYPICAL, "--apply"], env=dict(os.environ, PATH=str(bindir)))
    assert r.returncode == 1, r
    assert "failed (exit status 4)" in r.stderr and "refused" in r.stderr


# --- --apply for real, in a network namespace -------------------------------------------------


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("applying iptables rules needs root (CAP_NET_ADMIN) to create a network namespace")
    for tool in ("ip", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            pytest.skip(f"'{tool}' is not installed (scripts/install-deps.sh installs iproute2 and iptables)")
    name = f"outrider-ipt-{os.getpid()}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    created = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace (ip netns add: {created.stderr.strip()})")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _in_ns(ns, *args):
    return _run(["ip", "netns", "exec", ns, *args])


def _saved_nat(ns, tool="iptables-save"):
    r = _in_ns(ns, tool, "-t", "nat")
    if r.returncode != 0 and "Table does not exist" in r.stderr:
        return ""
    assert r.returncode == 0, r
    return r.stdout


def test_apply_in_network_namespace(outrider_bin, netns):
    probe = _in_ns(netns, "iptables-save", "-t", "nat")
    if probe.returncode != 0 and "Table does not exist" not in probe.stderr:
        pytest.skip(f"iptables does not work in a namespace here: {probe.stderr.strip()}")
    r = _in_ns(netns, outrider_bin, *TYPICAL, "--apply")
    assert r.returncode == 0, r
    saved = _saved_nat(netns)
    for chain in CHAINS:
        assert f":{chain} - [0:0]" in saved, saved
    # the script is written the way iptables-save prints rules: same lines, same order
    assert _rules(saved) == _rules(TYPICAL_SCRIPT), saved

    # applying again (another exclusion) replaces the chains' rules, never duplicates the jumps
    again = _in_ns(netns, outrider_bin, *TYPICAL[:-1], "15021,15020,22", "--apply")
    assert again.returncode == 0, again
    saved = _saved_nat(netns)
    rules = _rules(saved)
    assert rules.count("-A PREROUTING -p tcp -j OUTRIDER_INBOUND") == 1, saved
    assert rules.count("-A OUTPUT -p tcp -j OUTRIDER_OUTPUT") == 1, saved
    assert "-A OUTRIDER_INBOUND -p tcp -m tcp --dport 22 -j RETURN" in rules
    printed = _run([outrider_bin, *TYPICAL[:-1], "15021,15020,22"])
    assert rules == _rules(printed.stdout)


def test_apply_ipv6_in_network_namespace(outrider_bin, netns):
    if shutil.which("ip6tables-restore") is None:
        pytest.skip("'ip6tables-restore' is not installed")
    probe = _in_ns(netns, "ip6tables-save", "-t", "nat")
    if probe.returncode != 0 and "Table does not exist" not in probe.stderr:
        pytest.skip(f"ip6tables does not work in a namespace here: {probe.stderr.strip()}")
    r = _in_ns(netns, outrider_bin, *TYPICAL, "--ipv6", "--apply")
    assert r.returncode == 0, r
    saved = _saved_nat(netns, "ip6tables-save")
    for chain in CHAINS:
        assert f":{chain} - [0:0]" in saved, saved
    assert "-A OUTRIDER_OUTPUT -d ::1/128 -j RETURN" in _rules(saved)
    printed = _run([outrider_bin, *TYPICAL, "--ipv6"])
    assert _rules(saved) == _rules(printed.stdout)
    assert "OUTRIDER" not in _saved_nat(netns, "iptables-save")  # IPv4 untouched


def test_apply_failure_in_network_namespace_names_the_line(outrider_bin, netns, tmp_path):
    """A real iptables-restore refusing the script: its message and exit status come through.
    A wrapper that appends an invalid rule stands in for a kernel missing a match module."""
    real = shutil.which("iptables-restore")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "iptables-restore"
    wrapper.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import subprocess, sys
        script = sys.stdin.read().replace("COMMIT\\n", "-A OUTRIDER_REDIRECT -j NO_SUCH_CHAIN\\nCOMMIT\\n")
        sys.exit(subprocess.run([{real!r}, *sys.argv[1:]], input=script, text=True).returncode)
        """))
    wrapper.chmod(0o755)
    save = bindir / "iptables-save"
    save.symlink_to(shutil.which("iptables-save"))
    r = _run(["ip", "netns", "exec", netns, "env", f"PATH={bindir}", outrider_bin, *TYPICAL, "--apply"])
    assert r.returncode == 1, r
    assert "iptables-restore --noflush failed (exit status" in r.stderr, r.stderr
    assert "NO_SUCH_CHAIN" in r.stderr or "line" in r.stderr, r.stderr
    assert "OUTRIDER" not in _saved_nat(netns)  # all or nothing: nothing was installed
