"""Differential test of the HTTP/1.1 request parser: every message of diff_corpus.py is fed to
Python's h11 (as a server) and, over a socket, to the real outrider binary in front of a recording
upstream. For each message the two are compared:

  * accept or refuse, and the refusal status (h11's `error_status_hint`, Outrider's local reply);
  * for every accepted request, what the upstream received against what h11 parsed, after the
    documented proxy transformations (SPEC §2/§3, README "HTTP behaviour": re-framing, hop-by-hop
    fields dropped, absolute-form authority as Host, normalized path, `Expect` answered by the
    proxy): method, target, Host, the end-to-end header fields in order, body bytes, trailers.

A message's outcome on each side is a comma-separated list, one item per request it held:
`fwd` (forwarded; for Outrider: and the upstream got what h11 parsed), `fwd!` (Outrider forwarded
something else: always a bug), a status (refused), `close` (Outrider closed without an answer).

DELIBERATE lists every class of messages where Outrider differs from h11 on purpose, with the
outcome on both sides and the rule that demands it. The test fails when a message of an unlisted
class differs, when a listed class does not differ exactly as listed, or when a listed class no
longer exists, so that a new divergence in either direction is seen.

Run `python3 test_differential.py` (OUTRIDER_BIN set) for every case's outcome (`--diff`: only the
differing ones; `--table`: the deliberate differences as a markdown table)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field

import h11
import pytest

from diff_corpus import Case, cases
from upstream_server import RecordingUpstream
from wire import Conn, ProtocolError

MAX_HEADER_BYTES = 65536  # Outrider's default limits.max_header_bytes, given to h11 too

# class -> (h11 outcome, Outrider outcome, why). "R" marks a rule Outrider follows where h11 is
# more lenient; "H" where h11 is stricter than RFC 9110/9112 and Outrider follows the RFC.
S3 = "SPEC §3 Strictness"
R = "README HTTP behaviour"
DELIBERATE: dict[str, tuple[str, str, str]] = {
    # request line
    "method-over-32-bytes": ("fwd", "400", f"R: implementation limit, a method is at most 32 bytes ({R}, Strictness)"),
    "version-other-digits": ("fwd", "400", f"R: {S3}: malformed request line; {R}: versions other than 1.0/1.1 are 400"),
    "h2-preface-on-http1": ("fwd,400", "400", f"R: {S3}: `PRI * HTTP/2.0` on an http1-only listener is a malformed request line (h11 takes it as a request)"),
    # targets
    "target-backslash": ("fwd", "400", "R: SPEC §2: a raw `\\` in the path is 400"),
    "target-fragment": ("fwd", "400", f"R: {R} Paths: `#` is 400 (RFC 9112 §3.2: no fragment in a request-target)"),
    "target-refused-by-normalizer": ("fwd", "400", f"R: SPEC §2: `%2F`, `%5C`, dot-segments above the root are 400; {R} Paths: `.;`/`..;` segments"),
    "target-malformed-escape": ("fwd", "400", f"R: RFC 3986 §2.1 pct-encoded is `%` HEXDIG HEXDIG, the SPEC §2 normalizer cannot decode it; {R} Paths"),
    "target-origin-not-slash": ("fwd", "400", "R: RFC 9112 §3.2: origin-form starts with `/`, and this is no absolute-URI either"),
    "target-asterisk-not-options": ("fwd", "400", f"R: RFC 9112 §3.2.4: asterisk-form only for OPTIONS; {R} Paths"),
    "absolute-form-userinfo": ("fwd", "400", f"R: RFC 9110 §4.2.4: userinfo in an http(s) URI is an error; the authority becomes the Host ({R} Paths)"),
    "absolute-form-bad-authority": ("fwd", "400", f"R: RFC 9110 §4.2.1 (empty host MUST be rejected) and §7.2 (invalid Host → 400); {R} Paths"),
    "absolute-form-other-scheme": ("fwd", "400", f"R: {R} Paths: absolute-form is http:// or https:// (a reverse proxy serves no other scheme)"),
    "connect-not-authority-form": ("fwd", "400", f"R: RFC 9112 §3.2.3: CONNECT takes host:port only; {R} Paths"),
    # Host
    "host-empty": ("fwd", "400", f"R: {S3} (no Host); {R} Strictness: an empty Host is 400"),
    "host-invalid-chars": ("fwd", "400", f"R: RFC 9110 §7.2: an invalid Host MUST get 400; {R} Strictness: Host is uri-host[:port]"),
    # header section
    "header-count-over-100": ("fwd", "431", "R: SPEC §3 table: 431 over `max_headers` (100)"),
    "head-over-64KiB": ("fwd", "431", "R: SPEC §3 table: 431 over `max_header_bytes` (64 KiB); h11 bounds only a head still incomplete"),
    "value-ctl-h11-accepts": ("fwd", "400", f"R: {S3}: NUL or other control bytes in the head (h11's field-vchar is [^\\x00\\s])"),
    "obs-fold": ("fwd", "400", f"R: {S3}: obs-fold (h11 joins the lines)"),
    "obs-fold-te": ("fwd", "501", f"R: {S3}: a Transfer-Encoding that is not exactly `chunked` is 501, and the line reads empty before its fold"),
    "bare-lf": ("fwd", "400", f"R: {S3}: bare LF line ends"),
    "leading-blank-lines": ("400", "fwd", f"H: RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line; {R} Strictness: up to 64 bytes"),
    # framing
    "content-length-19-digits": ("fwd", "400", f"R: RFC 9110 §8.6 (guard against overflow); {R} Strictness: over 18 digits is 400"),
    "content-length-list-same": ("fwd", "400", f"R: {R} Strictness: list-valued Content-Length (`5, 5`) is 400 (RFC 9110 §8.6 allows refusing it)"),
    "content-length-and-transfer-encoding": ("fwd", "400", f"R: {S3}: both Content-Length and Transfer-Encoding (h11 lets TE win)"),
    "transfer-encoding-http10": ("fwd", "400", f"R: {R} Strictness: Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1: faulty framing)"),
    "chunk-extension-bws-before-semicolon": ("400", "fwd", "H: RFC 9112 §7.1.1: chunk-ext = *( BWS \";\" … ): whitespace before `;` is allowed"),
    "chunk-extension-ctl": ("fwd", "400", f"R: {S3}: invalid chunk line; RFC 9112 §7.1.1 ext is token / quoted-string (h11 takes `;.*`)"),
    "chunk-line-over-4KiB": ("fwd", "400", f"R: {S3}: a chunk line over 4 KiB"),
    "chunk-size-over-15-digits": ("fwd", "400", f"R: {S3}: oversized chunk size; {R} Strictness: over 15 hex digits"),
    "chunked-end-bare-lf": ("fwd", "400", f"R: {S3}: bare LF line ends"),
    "trailers-obs-fold": ("fwd", "400", f"R: {S3}: obs-fold (trailer lines are field lines, RFC 9112 §7.1.2)"),
    "trailers-ctl": ("fwd", "400", f"R: {S3}: control bytes (trailer lines are field lines)"),
    "trailers-bare-lf": ("fwd", "400", f"R: {S3}: bare LF line ends"),
    "trailers-over-16KiB": ("fwd", "400", f"R: {R} Strictness: a trailer section over 16 KiB"),
    "pipelined-second-bad": ("fwd,fwd", "fwd,400", f"R: {S3}: obs-fold in the second request"),
    # end of input
    "incomplete-head-at-eof": ("400", "close", f"R: {R} Strictness: a half-close inside a head is closed without an answer, as nginx does"),
    "incomplete-pipelined-head-at-eof": ("fwd,400", "fwd,close", f"R: as incomplete-head-at-eof, after the first answer ({R} Half-closed clients)"),
    # fuzz seeds that are cases of the classes above
    "seed-bare-lf": ("fwd", "400", "R: as bare-lf"),
    "seed-cl-and-te": ("fwd", "400", "R: as content-length-and-transfer-encoding"),
    "seed-leading-blank-lines": ("400", "fwd", "H: as leading-blank-lines"),
    "seed-obs-fold": ("fwd", "400", "R: as obs-fold"),
    "seed-path-refused": ("fwd", "400", "R: as target-refused-by-normalizer"),
}


# ---------------------------------------------------------------------------------------------
# h11


@dataclass
class Parsed:
    method: bytes
    target: bytes
    version: bytes
    headers: list  # [(raw name, value)]
    body: bytes = b""
    trailers: list = field(default_factory=list)


def run_h11(data: bytes) -> tuple[list[Parsed], list[str]]:
    """Feeds `data` and then EOF to an h11 server connection; answers each request with a 200.
    Returns the requests it completed and the outcome items ("fwd" per request, then a refusal
    status if it raised)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    conn.receive_data(data)
    conn.receive_data(b"")
    done: list[Parsed] = []
    items: list[str] = []
    current = None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            items.append(str(e.error_status_hint))
            return done, items
        if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return done, items
        if isinstance(event, h11.Request):
            current = Parsed(event.method, event.target, event.http_version, list(event.headers.raw_items()))
        elif isinstance(event, h11.Data):
            current.body += event.data
        elif isinstance(event, h11.EndOfMessage):
            current.trailers = list(event.headers.raw_items())
            done.append(current)
            items.append("fwd")
            conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            if conn.our_state is h11.SWITCHED_PROTOCOL:  # a 2xx to CONNECT: a tunnel now
                return done, items
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                return done, items
            conn.start_next_cycle()


# ---------------------------------------------------------------------------------------------
# The documented transformations, applied to what h11 parsed: what the upstream must receive.

UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
NOT_COMPARED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te",
                "upgrade", "expect", "x-request-id", "traceparent", "tracestate"}


def normalize_path(target: bytes) -> bytes:
    """SPEC §2: dot-segments resolved, repeated slashes merged, unreserved escapes decoded, other
    escapes upper-case; the query as it came. (Written from the SPEC, not from the Swift code.)"""
    path, q, query = target.partition(b"?")
    segments = []
    for raw in path.split(b"/")[1:]:
        seg = re.sub(rb"%([0-9A-Fa-f]{2})",
                      lambda m: bytes([int(m.group(1), 16)]) if int(m.group(1), 16) in UNRESERVED
                      else b"%" + m.group(1).upper(), raw)
        segments.append(seg)
    out: list[bytes] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == b".":
            if last:
                out.append(b"")
        elif seg == b"..":
            if out and out[-1] == b"":
                out.pop()
            if out:
                out.pop()
            if last:
                out.append(b"")
        elif seg == b"":
            if last:
                out.append(b"")
        else:
            out.append(seg)
    return b"/" + b"/".join(out) + (q + query)


def expected_forward(p: Parsed) -> dict:
    method, target = p.method, p.target
    hdrs = [(k, v) for k, v in p.headers]
    host = next((v for k, v in hdrs if k.lower() == b"host"), b"")
    if method == b"CONNECT":
        host = target
    elif target == b"*":
        pass
    elif not target.startswith(b"/"):
        m = re.fullmatch(rb"(?i:https?)://([^/?]+)(.*)", target)
        assert m, f"absolute-form the model does not know: {target!r}"
        path = m.group(2) if m.group(2).startswith(b"/") else b"/" + m.group(2)  # RFC 9110 §4.2.3
        host, target = m.group(1), normalize_path(path)
    else:
        target = normalize_path(target)
    listed = set()
    for k, v in hdrs:
        if k.lower() == b"connection":
            listed |= {t.strip().lower() for t in v.split(b",") if t.strip()}
    names_tokens = lambda name: {t.strip().lower() for k, v in hdrs if k.lower() == name for t in v.split(b",")}
    fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in hdrs
              if k.lower().decode("latin-1") not in NOT_COMPARED and k.lower() not in listed]
    upgrade = None
    if b"upgrade" in names_tokens(b"connection"):
        upgrade = next((v.decode("latin-1") for k, v in hdrs if k.lower() == b"upgrade"), None)
    return {
        "method": method.decode("latin-1"),
        "target": target.decode("latin-1"),
        "host": host.decode("latin-1"),
        "fields": fields,
        "te": "trailers" if b"trailers" in names_tokens(b"te") else None,
        "upgrade": upgrade,
        "body": hashlib.sha256(p.body).hexdigest()[:16] + f"/{len(p.body)}",
        "trailers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in p.trailers],
    }


def received(rec) -> dict:
    return {
        "method": rec.method,
        "target": rec.target,
        "host": rec.header("host"),
        "fields": [(k, v) for k, v in rec.headers if k.lower() not in NOT_COMPARED],
        "te": rec.header("te"),
        "upgrade": rec.header("upgrade"),
        "body": rec.digest,
        "trailers": list(rec.trailers),
    }


# ---------------------------------------------------------------------------------------------
# Outrider


class DiffUpstream(RecordingUpstream):
    """The recording upstream, answering every request with an empty 200 (whatever its path) and
    keeping a digest of each body (also of /upload bodies, which it does not store)."""

    async def _respond(self, rec, path, writer, sock, hasher) -> bool:
        if re.search(r"/upload(/|$)", path):
            rec.digest = hasher.hexdigest()[:16] + f"/{rec.body_len}"
        else:
            rec.digest = hashlib.sha256(rec.body).hexdigest()[:16] + f"/{rec.body_len}"
        writer.write(self._head(rec, 200, [("content-length", "0")]))
        await writer.drain()
        return True


def run_outrider(port: int, up: DiffUpstream, data: bytes) -> tuple[list, list[str]]:
    """Sends `data`, half-closes, reads every answer until the proxy closes. Returns the upstream
    records of this exchange and the outcome items."""
    mark = len(up.records)
    items: list[str] = []
    method = data.split(b" ", 1)[0].lstrip(b"\r\n")
    with Conn(port, timeout=5) as c:
        c.send(data)
        c.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 5
        while True:
            try:
                if not c.buf and not c._fill(deadline):
                    break
            except TimeoutError:
                items.append("timeout")
                break
            try:
                r = c.read_response(method="HEAD" if method == b"HEAD" else "GET", timeout=max(0.1, deadline - time.monotonic()))
            except ProtocolError as e:
                items.append(f"garbled({e})")
                break
            except TimeoutError:
                items.append("timeout")
                break
            items.append(str(r.status) if r.header("x-outrider-error") else ("fwd" if r.status == 200 else f"up{r.status}"))
    # let the upstream finish what it received (a body the proxy aborted ends in `aborted`)
    up.wait_for(lambda: all(r.complete or r.aborted for r in up.records[mark:]), 1.0)
    return list(up.records[mark:]), items


# ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    case: Case
    h11: str
    outrider: str
    detail: str = ""

    @property
    def differs(self) -> bool:
        return self.h11 != self.outrider


def compare(case: Case, port: int, up: DiffUpstream) -> Result:
    parsed, h_items = run_h11(case.data)
    records, o_items = run_outrider(port, up, case.data)
    complete = [r for r in records if r.complete]
    details = []
    fwd_seen = 0
    for i, item in enumerate(o_items):
        if item != "fwd":
            continue
        fwd_seen += 1
        if fwd_seen > len(complete):
            o_items[i] = "fwd!"
            details.append(f"answer {i + 1}: 200 without a complete upstream request")
            continue
        got = received(complete[fwd_seen - 1])
        if i >= len(parsed):
            # h11 refused it: nothing to compare with (the outcomes differ anyway)
            details.append(f"request {i + 1}: h11 refused, the upstream got {got}")
            continue
        want = expected_forward(parsed[i])
        diff = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
        if diff:
            o_items[i] = "fwd!"
            details.append(f"request {i + 1}: " + "; ".join(f"{k}: h11 {a!r} / upstream {b!r}" for k, (a, b) in diff.items()))
    if len(complete) > fwd_seen:
        details.append(f"{len(complete) - fwd_seen} complete request(s) reached the upstream unanswered: "
                       f"{[r.raw_head[:120] for r in complete[fwd_seen:]]}")
        o_items.append("upstream-extra")
    partial = [r for r in records if not r.complete and not r.aborted]
    if partial:
        details.append(f"upstream left with a partial request: {[r.raw_head[:120] for r in partial]}")
    if len(h_items) > len(o_items) and all(x == "fwd" for x in o_items) and h_items[:len(o_items)] == o_items:
        o_items.append("close")  # Outrider ended without answering what h11 refused
    return Result(case, ",".join(h_items) or "-", ",".join(o_items) or "close", "; ".join(details))


def run_corpus(port: int, up: DiffUpstream) -> list[Result]:
    return [compare(c, port, up) for c in cases()]


def check(results: list[Result]) -> list[str]:
    """Problems: a difference outside DELIBERATE, a listed class that no longer differs as listed,
    a listed class without cases, a `fwd!` anywhere."""
    problems = []
    by_class: dict[str, list[Result]] = {}
    for r in results:
        by_class.setdefault(r.case.cls, []).append(r)
        if "fwd!" in r.outrider or "upstream-extra" in r.outrider or "garbled" in r.outrider:
            problems.append(f"{r.case.id}: Outrider forwarded something else than h11 parsed: {r.detail}  [{r.case.data[:160]!r}]")
    for cls, rs in sorted(by_class.items()):
        listed = DELIBERATE.get(cls)
        for r in rs:
            if listed is None and r.differs:
                problems.append(f"{r.case.id}: h11 {r.h11} / Outrider {r.outrider} (class not in DELIBERATE) "
                                f"{r.detail} [{r.case.data[:160]!r}]")
            elif listed is not None and (r.h11, r.outrider) != listed[:2]:
                problems.append(f"{r.case.id}: h11 {r.h11} / Outrider {r.outrider}, DELIBERATE says "
                                f"h11 {listed[0]} / Outrider {listed[1]} {r.detail} [{r.case.data[:160]!r}]")
    for cls in DELIBERATE:
        if cls not in by_class:
            problems.append(f"DELIBERATE lists {cls!r}, which has no case in the corpus")
    return problems


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diff_upstream(loop_thread):
    up = loop_thread.run(DiffUpstream("diff-upstream").start())
    yield up
    problems = up.wellformedness_problems()
    loop_thread.run(up.stop())
    assert not problems, f"the proxy sent malformed requests upstream: {problems}"


def start_diff_proxy(outrider_bin, workdir, up):
    from conftest import start_proxy

    return start_proxy(outrider_bin, workdir, upstream=up, listener={"forwarded_headers": False},
                       top={"workers": 1, "access_log": {"format": "off"}})


def test_differential_h11(outrider_bin, tmp_path, diff_upstream):
    p = start_diff_proxy(outrider_bin, tmp_path / "proxy", diff_upstream)
    try:
        results = run_corpus(p.port, diff_upstream)
        assert p.alive(), "the proxy died during the corpus"
    finally:
        problem = p.stop()
    n_diff = sum(r.differs for r in results)
    print(f"{len(results)} messages, {len({r.case.cls for r in results})} classes, {n_diff} differ from h11 "
          f"in {len({r.case.cls for r in results if r.differs})} classes")
    problems = check(results)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
    assert problem is None, problem


def main():
    """Print every case's outcome (and the differing classes) against OUTRIDER_BIN."""
    import tempfile
    from pathlib import Path

    from conftest import outrider_bin_path
    from upstream_server import LoopThread

    lt = LoopThread()
    up = lt.run(DiffUpstream("diff-upstream").start())
    with tempfile.TemporaryDirectory() as d:
        p = start_diff_proxy(outrider_bin_path(), Path(d), up)
        try:
            results = run_corpus(p.port, up)
        finally:
            p.stop()
    if "--table" in sys.argv:  # the markdown table of deliberate differences, with case counts
        print("| class | cases | h11 | Outrider | why |\n|---|---|---|---|---|")
        for cls, (h, o, why) in DELIBERATE.items():
            n = sum(r.case.cls == cls for r in results)
            print(f"| `{cls}` | {n} | {h} | {o} | {why} |")
        agree = sum(not r.differs for r in results)
        print(f"\n{len(results)} messages in {len({r.case.cls for r in results})} classes; {agree} agree, "
              f"{len(results) - agree} differ in {len(DELIBERATE)} classes; {len(check(results))} problems")
        lt.run(up.stop())
        lt.close()
        return
    only_diff = "--diff" in sys.argv
    for r in results:
        if only_diff and not r.differs:
            continue
        flag = "  " if not r.differs else ("L " if r.case.cls in DELIBERATE else "!!")
        print(f"{flag} {r.case.id:55} h11 {r.h11:14} outrider {r.outrider:14} {r.detail[:300]}")
    problems = check(results)
    print(f"\n{len(results)} cases; {len(problems)} problems")
    for pr in problems:
        print(" -", pr[:400])
    lt.run(up.stop())
    lt.close()


if __name__ == "__main__":
    main()
