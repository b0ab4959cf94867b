"""The HTTP/1.1 request corpus of the differential test (test_differential.py): Outrider against
Python's h11 (as a server). Hand-written cases plus generated sweeps, and the seeds of the
http1-parser fuzz target (Tests/fuzz/http1-parser/corpus).

Every case is (class, id, bytes). The class groups cases that must behave alike: the
differential test's table of deliberate differences is keyed by class, and every case of a
listed class must differ from h11 in exactly the listed way (and no case of an unlisted class
may differ), so a class has to be homogeneous. `python3 diff_corpus.py` prints the corpus.

Targets avoid the recording upstream's behaviour words (/status/, /slow/, /close, /reset, ...):
every path starts with /d."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SEEDS = Path(__file__).resolve().parents[1] / "fuzz" / "http1-parser" / "corpus"

CRLF = b"\r\n"


@dataclass(frozen=True)
class Case:
    cls: str
    id: str
    data: bytes


def req(method=b"GET", target=b"/d", version=b"HTTP/1.1", headers=((b"Host", b"a"),), body=b"",
        eol=CRLF, sep=b": ") -> bytes:
    lines = [method + b" " + target + b" " + version]
    lines += [k + sep + v for k, v in headers]
    return eol.join(lines) + eol + eol + body


def chunked(body: bytes, headers=(), version=b"HTTP/1.1", target=b"/d/chunked-body") -> bytes:
    """A POST whose chunked body is given raw (chunk lines, data, last chunk, trailers)."""
    hs = [(b"Host", b"a")] if version == b"HTTP/1.1" else []
    return req(b"POST", target, version, hs + [(b"Transfer-Encoding", b"chunked"), *headers], body)


def _b(x) -> bytes:
    return x if isinstance(x, bytes) else x.encode("latin-1")


def cases() -> list[Case]:
    out: list[Case] = []

    def add(cls, id_, data):
        out.append(Case(cls, f"{cls}/{id_}", _b(data)))

    # ---- request line: methods ------------------------------------------------------------
    for m in [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"]:
        add("method-standard", m.decode(), req(m, b"/d/m"))
    for m in [b"PROPFIND", b"M-SEARCH", b"PURGE", b"get", b"X!#$%&'*+.^_`|~1", b"A" * 32]:
        add("method-extension", m.decode()[:12], req(m, b"/d/ext"))
    add("method-over-32-bytes", "33", req(b"A" * 33, b"/d/ext"))
    add("method-over-32-bytes", "64", req(b"B" * 64, b"/d/ext"))
    for m in [b"GE(T", b"GET/", b"G@T", b"GE\"T", b"G{T", b"GE,T", b"G\x80T"]:
        add("method-non-tchar", repr(m)[2:-1], req(m, b"/d"))
    add("request-line-empty-method", "empty", b" /d HTTP/1.1\r\nHost: a\r\n\r\n")

    # ---- request line: versions -------------------------------------------------------------
    add("version-1.0", "no-host", req(version=b"HTTP/1.0", headers=()))
    add("version-1.0", "host", req(version=b"HTTP/1.0"))
    add("version-1.0", "keep-alive", req(version=b"HTTP/1.0", headers=((b"Connection", b"keep-alive"),)))
    for v in [b"HTTP/1.2", b"HTTP/1.9", b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9"]:
        add("version-other-digits", v.decode(), req(version=v))
    for v in [b"http/1.1", b"HTTP/1", b"HTTP/1.1.1", b"HTTP/11", b"HTTP/1.x", b"HTTPS/1.1", b"HTTP/ 1.1",
              b"HTTP/10.1", b"HTTP/1.10"]:
        add("version-malformed", v.decode(), req(version=v))
    add("version-missing-http09", "get", b"GET /d\r\n\r\n")
    add("version-missing-http09", "get-host", b"GET /d\r\nHost: a\r\n\r\n")
    add("h2-preface-on-http1", "pri", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

    # ---- request line: spacing ----------------------------------------------------------------
    add("request-line-spacing", "double-sp-1", b"GET  /d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("request-line-spacing", "double-sp-2", b"GET /d  HTTP/1.1\r\nHost: a\r\n\r\n")
    add("request-line-spacing", "trailing-sp", b"GET /d HTTP/1.1 \r\nHost: a\r\n\r\n")
    add("request-line-spacing", "leading-sp", b" GET /d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("request-line-spacing", "tab-1", b"GET\t/d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("request-line-spacing", "tab-2", b"GET /d\tHTTP/1.1\r\nHost: a\r\n\r\n")
    add("request-line-spacing", "no-target", b"GET HTTP/1.1\r\nHost: a\r\n\r\n")
    add("request-line-spacing", "sp-in-target", b"GET /d /e HTTP/1.1\r\nHost: a\r\n\r\n")

    # ---- request target: bytes ------------------------------------------------------------------
    for c in range(0x00, 0x21):
        if c in (0x0A, 0x0D):
            continue  # line structure: see the bare CR / LF classes
        add("target-ctl-or-space", f"0x{c:02x}", req(target=b"/d/a" + bytes([c]) + b"b"))
    add("target-ctl-or-space", "0x7f", req(target=b"/d/a\x7fb"))
    for c in [0x80, 0xA0, 0xE9, 0xFF]:
        add("target-obs-text", f"0x{c:02x}", req(target=b"/d/a" + bytes([c]) + b"b"))
    for ch in "\"<>^`{|}!$&'()*+,;=:@~-._":
        add("target-visible", f"{ord(ch):02x}", req(target=b"/d/a" + ch.encode() + b"b"))
    add("target-backslash", "raw", req(target=b"/d/a\\b"))
    add("target-fragment", "path", req(target=b"/d/a#frag"))
    add("target-fragment", "query", req(target=b"/d/a?q=1#frag"))

    # ---- request target: normalization (SPEC §2) ---------------------------------------------
    for t in [b"/d/a/./b/../c", b"/d//a///b", b"/d/%7Ea%41%5a", b"/d/%3a%2c", b"/d/%c3%a9", b"/d/a/..",
              b"/d/a/.", b"/d/a/", b"/d/%2e%2E/x", b"/d/a?q=/../%2F//x", b"/d/a?", b"/d/x;p=1/y", b"/d/%00"]:
        add("target-normalized", t.decode("latin-1"), req(target=t))
    for t in [b"/d/a%2Fb", b"/d/a%2fb", b"/d/a%5Cb", b"/d/../../x", b"/..", b"/d/..;/x", b"/d/.;/x", b"/d/%2e%2e;/x"]:
        add("target-refused-by-normalizer", t.decode(), req(target=t))
    for t in [b"/d/a%zz", b"/d/a%4", b"/d/a%", b"/d/%G1"]:
        add("target-malformed-escape", t.decode(), req(target=t))
    add("target-origin-not-slash", "relative", req(target=b"d/a"))
    add("target-origin-not-slash", "query-only", req(target=b"?a=b"))
    add("target-asterisk", "options", req(b"OPTIONS", b"*"))
    add("target-asterisk-not-options", "get", req(b"GET", b"*"))

    # ---- request target: absolute-form (RFC 9112 §3.2.2) --------------------------------------
    add("absolute-form", "http", req(target=b"http://h.example/d/abs"))
    add("absolute-form", "http-host-differs", req(target=b"http://h.example/d/abs", headers=((b"Host", b"other"),)))
    add("absolute-form", "https-port-query", req(target=b"https://h.example:8443/d/abs?q=1"))
    add("absolute-form", "upper-scheme", req(target=b"HTTP://H.EXAMPLE/d/abs"))
    add("absolute-form", "ipv6", req(target=b"http://[::1]:8080/d/abs"))
    add("absolute-form", "dots", req(target=b"http://h.example/d/a/../abs"))
    add("absolute-form", "http10", req(target=b"http://h.example/d/abs", version=b"HTTP/1.0", headers=()))
    add("absolute-form-empty-path", "bare", req(target=b"http://h.example"))
    add("absolute-form-empty-path", "query", req(target=b"http://h.example?q=1"))
    add("absolute-form-userinfo", "user", req(target=b"http://user@h.example/d/abs"))
    add("absolute-form-userinfo", "user-pass", req(target=b"http://user:pw@h.example/d/abs"))
    add("absolute-form-bad-authority", "empty", req(target=b"http:///d/abs"))
    add("absolute-form-bad-authority", "quote", req(target=b"http://h\"x/d/abs"))
    add("absolute-form-bad-authority", "brace", req(target=b"http://h{x}/d/abs"))
    add("absolute-form-other-scheme", "ftp", req(target=b"ftp://h.example/d/abs"))
    add("absolute-form-other-scheme", "urn", req(target=b"urn:x:y"))
    add("absolute-form-no-host-header", "http11", req(target=b"http://h.example/d/abs", headers=()))

    # ---- CONNECT (authority-form) -------------------------------------------------------------
    add("connect-authority-form", "host-port", req(b"CONNECT", b"h.example:443", headers=((b"Host", b"h.example:443"),)))
    add("connect-not-authority-form", "origin", req(b"CONNECT", b"/d/x"))
    add("connect-not-authority-form", "userinfo", req(b"CONNECT", b"u@h.example:443"))
    add("connect-not-authority-form", "absolute", req(b"CONNECT", b"http://h.example:443/"))

    # ---- Host ----------------------------------------------------------------------------------
    add("host-missing-http11", "none", req(headers=((b"X-A", b"b"),)))
    add("host-missing-http11", "only-x-host", req(headers=((b"X-Host", b"a"),)))
    for hs in [((b"Host", b"a"), (b"Host", b"a")), ((b"Host", b"a"), (b"Host", b"b")),
               ((b"Host", b"a"), (b"host", b"b")), ((b"Host", b"a"), (b"X-A", b"1"), (b"HOST", b"a"))]:
        add("host-duplicate", b"+".join(v for _, v in hs).decode() + str(len(out)), req(headers=hs))
    add("host-empty", "http11", req(headers=((b"Host", b""),)))
    add("host-empty", "http11-ows", req(headers=((b"Host", b"   "),)))
    add("host-empty", "http10", req(version=b"HTTP/1.0", headers=((b"Host", b""),)))
    for v in [b"a:8080", b"[::1]:80", b"a.b-c_d~e", b"127.0.0.1", b"xn--caf-dma.example", b"a:", b"a%20b"]:
        add("host-valid", v.decode(), req(headers=((b"Host", v),)))
    for v in [b"a b", b"a/b", b"a@b", b"a?b", b"a#b", b"a\"b", b"a<b", b"a\\b", b"a{b"]:
        add("host-invalid-chars", v.decode(), req(headers=((b"Host", v),)))
    add("host-invalid-chars", "obs-text", req(headers=((b"Host", b"caf\xe9"),)))
    add("host-case", "lower", req(headers=((b"host", b"a"),)))
    add("host-case", "mixed", req(headers=((b"hOsT", b"a"),)))

    # ---- header lines: syntax ---------------------------------------------------------------
    for name, val in [(b"X-A", b"v"), (b"X-A", b""), (b"X-A", b"  padded  "), (b"X-A", b"\tv\t"),
                      (b"X-A", b"a\tb"), (b"X-A", b"a  b"), (b"x-a", b"v"), (b"X_A", b"v"), (b"!#$%&'*+.^_`|~", b"v")]:
        add("header-valid", (name + b"=" + val).decode().replace("\t", "\\t"), req(headers=((b"Host", b"a"), (name, val))))
    add("header-valid", "no-sp-after-colon", b"GET /d HTTP/1.1\r\nHost: a\r\nX-A:v\r\n\r\n")
    add("header-valid", "20KiB-value", req(headers=((b"Host", b"a"), (b"X-Big", b"v" * 20480))))
    add("header-valid", "100-fields", req(headers=[(b"Host", b"a")] + [(b"X-%d" % i, b"v") for i in range(99)]))
    add("header-count-over-100", "101-fields", req(headers=[(b"Host", b"a")] + [(b"X-%d" % i, b"v") for i in range(100)]))
    add("header-count-over-100", "150-fields", req(headers=[(b"Host", b"a")] + [(b"X-%d" % i, b"v") for i in range(149)]))
    add("head-over-64KiB", "one-field", req(headers=((b"Host", b"a"), (b"X-Big", b"v" * 70000))))
    add("head-over-64KiB", "many-fields", req(headers=[(b"Host", b"a")] + [(b"X-%d" % i, b"v" * 1000) for i in range(80)]))
    for c in range(0x00, 0x20):
        if c in (0x0A, 0x0D, 0x09):
            continue
        cls = "value-ctl-both-refuse" if c in (0x00, 0x0B, 0x0C) else "value-ctl-h11-accepts"
        add(cls, f"0x{c:02x}", req(headers=((b"Host", b"a"), (b"X-A", b"a" + bytes([c]) + b"b"))))
    add("value-ctl-h11-accepts", "0x7f", req(headers=((b"Host", b"a"), (b"X-A", b"a\x7fb"))))
    add("value-ctl-both-refuse", "nul-leading", req(headers=((b"Host", b"a"), (b"X-A", b"\x00b"))))
    add("value-ctl-h11-accepts", "0x01-trailing", req(headers=((b"Host", b"a"), (b"X-A", b"ab\x01"))))
    for c in [0x80, 0x9F, 0xA0, 0xE9, 0xFF]:
        add("value-obs-text", f"0x{c:02x}", req(headers=((b"Host", b"a"), (b"X-A", b"a" + bytes([c]) + b"b"))))
    for c in sorted(set(range(0x21, 0x7F)) - set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:")):
        add("name-non-tchar", f"0x{c:02x}", req(headers=((b"Host", b"a"), (b"X" + bytes([c]) + b"Y", b"v"))))
    for c in [0x00, 0x01, 0x7F, 0x80, 0xE9, 0x20]:
        add("name-non-tchar", f"0x{c:02x}", req(headers=((b"Host", b"a"), (b"X" + bytes([c]) + b"Y", b"v"))))
    add("name-empty", "colon-first", b"GET /d HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n")
    add("header-no-colon", "word", b"GET /d HTTP/1.1\r\nHost: a\r\nX-A v\r\n\r\n")
    add("header-no-colon", "lone-word", b"GET /d HTTP/1.1\r\nHost: a\r\nfoo\r\n\r\n")
    add("whitespace-before-colon", "sp", b"GET /d HTTP/1.1\r\nHost: a\r\nX-A : v\r\n\r\n")
    add("whitespace-before-colon", "tab", b"GET /d HTTP/1.1\r\nHost: a\r\nX-A\t: v\r\n\r\n")
    add("whitespace-before-colon", "host", b"GET /d HTTP/1.1\r\nHost : a\r\n\r\n")
    add("whitespace-before-colon", "cl", b"POST /d HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc")
    add("whitespace-before-colon", "te", b"POST /d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n")
    add("obs-fold", "sp", b"GET /d HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n")
    add("obs-fold", "tab", b"GET /d HTTP/1.1\r\nHost: a\r\nX-A: a\r\n\tb\r\n\r\n")
    add("obs-fold", "two-lines", b"GET /d HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n  c\r\n\r\n")
    add("obs-fold", "host", b"GET /d HTTP/1.1\r\nHost: a\r\n .example\r\n\r\n")
    add("obs-fold-te", "te", b"POST /d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n")
    add("obs-fold-first-line", "sp", b"GET /d HTTP/1.1\r\n Host: a\r\n\r\n")
    add("obs-fold-first-line", "tab", b"GET /d HTTP/1.1\r\n\tX-A: b\r\nHost: a\r\n\r\n")

    # ---- line ends ---------------------------------------------------------------------------
    add("bare-lf", "everywhere", b"GET /d HTTP/1.1\nHost: a\n\n")
    add("bare-lf", "request-line", b"GET /d HTTP/1.1\nHost: a\r\n\r\n")
    add("bare-lf", "header-line", b"GET /d HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n")
    add("bare-lf", "last-header", b"GET /d HTTP/1.1\r\nHost: a\n\r\n")
    add("bare-lf", "blank-line", b"GET /d HTTP/1.1\r\nHost: a\r\n\n")
    add("bare-lf", "chunked-head", b"POST /d HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n0\r\n\r\n")
    add("bare-cr", "request-line", b"GET /d HTTP/1.1\rHost: a\r\n\r\n")
    add("bare-cr", "in-value", b"GET /d HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n")
    add("bare-cr", "header-line", b"GET /d HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n")
    add("bare-cr", "cr-cr-lf", b"GET /d HTTP/1.1\r\r\nHost: a\r\n\r\n")
    add("bare-cr", "in-target", b"GET /d\rx HTTP/1.1\r\nHost: a\r\n\r\n")
    add("leading-blank-lines", "one-crlf", b"\r\nGET /d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("leading-blank-lines", "three-crlf", b"\r\n\r\n\r\nGET /d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("leading-blank-lines-bare-lf", "lf", b"\nGET /d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("leading-blank-lines-over-64", "40-crlf", b"\r\n" * 40 + b"GET /d HTTP/1.1\r\nHost: a\r\n\r\n")

    # ---- NUL bytes ----------------------------------------------------------------------------
    add("nul-in-head", "method", b"G\x00T /d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("nul-in-head", "version", b"GET /d HTTP/1.\x001\r\nHost: a\r\n\r\n")
    add("nul-in-head", "name", b"GET /d HTTP/1.1\r\nHost: a\r\nX\x00: v\r\n\r\n")
    add("nul-in-head", "host", b"GET /d HTTP/1.1\r\nHost: a\x00b\r\n\r\n")
    add("nul-in-head", "before-request", b"\x00GET /d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("nul-in-body", "content-length", req(b"POST", headers=((b"Host", b"a"), (b"Content-Length", b"5")), body=b"a\x00b\x00c"))
    add("nul-in-body", "chunked", chunked(b"3\r\n\x00\x00\x00\r\n0\r\n\r\n"))

    # ---- Content-Length --------------------------------------------------------------------------
    def cl(value, body):
        return req(b"POST", b"/d/cl", headers=((b"Host", b"a"), (b"Content-Length", value)), body=body)

    for v, body in [(b"0", b""), (b"5", b"hello"), (b"007", b"1234567"), (b"000000000000000005", b"hello"),
                    (b" 5 ", b"hello"), (b"5\t", b"hello")]:
        add("content-length-valid", v.decode().strip() + f"-{len(out)}", cl(v, body))
    add("content-length-valid", "get-with-body", req(b"GET", b"/d/cl", headers=((b"Host", b"a"), (b"Content-Length", b"3")), body=b"abc"))
    add("content-length-valid", "two-identical", req(b"POST", b"/d/cl", headers=((b"Host", b"a"), (b"Content-Length", b"2"), (b"content-length", b"2")), body=b"ok"))
    add("content-length-19-digits", "zero-padded", cl(b"0000000000000000005", b"hello"))
    add("content-length-huge", "20-digits", cl(b"99999999999999999999", b"hello"))
    for v in [b"+5", b"-5", b"5a", b"0x5", b"5 5", b"", b"5.0", b"1e1", b"\xb5"]:
        add("content-length-invalid", repr(v)[2:-1] or "empty", cl(v, b"hello"))
    add("content-length-list-same", "5, 5", cl(b"5, 5", b"hello"))
    add("content-length-list-same", "5,5", cl(b"5,5", b"hello"))
    add("content-length-invalid", "5,,5", cl(b"5,,5", b"hello"))
    add("content-length-differing", "list", cl(b"4, 5", b"hello"))
    add("content-length-differing", "two-headers", req(b"POST", b"/d/cl", headers=((b"Host", b"a"), (b"Content-Length", b"4"), (b"Content-Length", b"5")), body=b"hello"))
    add("content-length-and-transfer-encoding", "cl-first", req(b"POST", b"/d", headers=((b"Host", b"a"), (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")), body=b"0\r\n\r\n"))
    add("content-length-and-transfer-encoding", "te-first", req(b"POST", b"/d", headers=((b"Host", b"a"), (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")), body=b"0\r\n\r\n"))
    add("content-length-and-transfer-encoding", "cl-zero", req(b"POST", b"/d", headers=((b"Host", b"a"), (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"0")), body=b"0\r\n\r\n"))
    add("content-length-http10", "body", req(b"POST", b"/d/cl", b"HTTP/1.0", headers=((b"Content-Length", b"3"),), body=b"abc"))

    # ---- Transfer-Encoding ------------------------------------------------------------------
    for v in [b"chunked", b"Chunked", b"CHUNKED", b" chunked ", b"\tchunked"]:
        add("transfer-encoding-chunked", repr(v)[2:-1], req(b"POST", b"/d/te", headers=((b"Host", b"a"), (b"Transfer-Encoding", v)), body=b"3\r\nabc\r\n0\r\n\r\n"))
    for v in [b"gzip, chunked", b"chunked, chunked", b"gzip", b"identity", b"chunked, gzip", b"deflate", b"", b"chunked;q=1",
              b"x-custom", b"chunked,", b", chunked"]:
        add("transfer-encoding-not-chunked", repr(v)[2:-1] or "empty", req(b"POST", b"/d/te", headers=((b"Host", b"a"), (b"Transfer-Encoding", v)), body=b"0\r\n\r\n"))
    add("transfer-encoding-not-chunked", "two-headers", req(b"POST", b"/d/te", headers=((b"Host", b"a"), (b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")), body=b"0\r\n\r\n"))
    add("transfer-encoding-not-chunked", "gzip-then-chunked-headers", req(b"POST", b"/d/te", headers=((b"Host", b"a"), (b"Transfer-Encoding", b"gzip"), (b"Transfer-Encoding", b"chunked")), body=b"0\r\n\r\n"))
    add("transfer-encoding-http10", "chunked", chunked(b"3\r\nabc\r\n0\r\n\r\n", version=b"HTTP/1.0"))
    add("transfer-encoding-http10", "chunked-host", req(b"POST", b"/d", b"HTTP/1.0", headers=((b"Host", b"a"), (b"Transfer-Encoding", b"chunked")), body=b"0\r\n\r\n"))

    # ---- chunked bodies -----------------------------------------------------------------------
    for id_, body in [
        ("one", b"5\r\nhello\r\n0\r\n\r\n"),
        ("two", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        ("empty", b"0\r\n\r\n"),
        ("upper-hex", b"A\r\n0123456789\r\n0\r\n\r\n"),
        ("lower-hex", b"a\r\n0123456789\r\n0\r\n\r\n"),
        ("leading-zeros", b"0005\r\nhello\r\n0\r\n\r\n"),
        ("15-digits", b"000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("last-chunk-zeros", b"5\r\nhello\r\n000\r\n\r\n"),
        ("binary-data", b"4\r\n\r\n\r\n\r\n0\r\n\r\n"),
        ("1000-one-byte-chunks", b"1\r\nx\r\n" * 1000 + b"0\r\n\r\n"),
        ("64KiB-chunk", b"10000\r\n" + b"y" * 65536 + b"\r\n0\r\n\r\n"),
    ]:
        add("chunked-valid", id_, chunked(body))
    for id_, body in [
        ("name", b"5;a\r\nhello\r\n0\r\n\r\n"),
        ("name-value", b"5;a=b\r\nhello\r\n0\r\n\r\n"),
        ("quoted", b"5;a=\"x y\"\r\nhello\r\n0\r\n\r\n"),
        ("two", b"5;a=b;c=d\r\nhello\r\n0\r\n\r\n"),
        ("on-last-chunk", b"5\r\nhello\r\n0;end=1\r\n\r\n"),
        ("trailing-sp", b"5 \r\nhello\r\n0\r\n\r\n"),
        ("trailing-tab", b"5\t\r\nhello\r\n0\r\n\r\n"),
        ("obs-text", b"5;a=\xe9\r\nhello\r\n0\r\n\r\n"),
    ]:
        add("chunk-extension", id_, chunked(body))
    add("chunk-extension-bws-before-semicolon", "sp", chunked(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"))
    add("chunk-extension-bws-before-semicolon", "tab", chunked(b"5\t;a=b\r\nhello\r\n0\r\n\r\n"))
    add("chunk-size-then-garbage", "sp-word", chunked(b"5 junk\r\nhello\r\n0\r\n\r\n"))
    add("chunk-size-then-garbage", "sp-digit", chunked(b"5 5\r\nhello\r\n0\r\n\r\n"))
    add("chunk-extension-ctl", "nul", chunked(b"5;a=\x00\r\nhello\r\n0\r\n\r\n"))
    add("chunk-extension-ctl", "0x01", chunked(b"5;a\x01\r\nhello\r\n0\r\n\r\n"))
    add("chunk-extension-ctl", "del", chunked(b"5;a\x7f\r\nhello\r\n0\r\n\r\n"))
    add("chunk-line-over-4KiB", "ext", chunked(b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n"))
    add("chunk-size-over-15-digits", "16-digits-zero-padded", chunked(b"0000000000000005\r\nhello\r\n0\r\n\r\n"))
    add("chunk-size-over-15-digits", "20-digits-zero-padded", chunked(b"00000000000000000005\r\nhello\r\n0\r\n\r\n"))
    for id_, body in [
        ("0x-prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("minus", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("plus", b"+5\r\nhello\r\n0\r\n\r\n"),
        ("empty-line", b"\r\nhello\r\n0\r\n\r\n"),
        ("leading-sp", b" 5\r\nhello\r\n0\r\n\r\n"),
        ("non-hex", b"zz\r\nhello\r\n0\r\n\r\n"),
        ("21-digits", b"FFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"),
        ("semicolon-first", b";a\r\nhello\r\n0\r\n\r\n"),
    ]:
        add("chunk-size-invalid", id_, chunked(body))
    for id_, body in [
        ("data-then-garbage", b"5\r\nhelloXX0\r\n\r\n"),
        ("data-short", b"5\r\nhel\r\n0\r\n\r\n"),
        ("data-lf", b"5\r\nhello\n0\r\n\r\n"),
        ("data-cr", b"5\r\nhello\r0\r\n\r\n"),
        ("size-lf", b"5\nhello\r\n0\r\n\r\n"),
        ("size-cr", b"5\rhello\r\n0\r\n\r\n"),
        ("last-chunk-lf", b"5\r\nhello\r\n0\n\r\n"),
    ]:
        add("chunk-framing-invalid", id_, chunked(body))
    add("chunked-end-bare-lf", "final-lf", chunked(b"5\r\nhello\r\n0\r\n\n"))
    for id_, body in [
        ("one", b"5\r\nhello\r\n0\r\nX-T: v\r\n\r\n"),
        ("two", b"5\r\nhello\r\n0\r\nX-T: v\r\nX-U: w\r\n\r\n"),
        ("ows", b"5\r\nhello\r\n0\r\nX-T:   v  \r\n\r\n"),
        ("empty-value", b"5\r\nhello\r\n0\r\nX-T:\r\n\r\n"),
        ("obs-text", b"5\r\nhello\r\n0\r\nX-T: caf\xe9\r\n\r\n"),
        ("grpc", b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n"),
    ]:
        add("trailers-valid", id_, chunked(body, headers=((b"Trailer", b"X-T"),)))
    add("trailers-framing-fields", "cl-te-host", chunked(b"3\r\nabc\r\n0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nHost: b\r\n\r\n"))
    add("trailers-obs-fold", "sp", chunked(b"3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n"))
    add("trailers-bad-syntax", "sp-before-colon", chunked(b"3\r\nabc\r\n0\r\nX-T : v\r\n\r\n"))
    add("trailers-bad-syntax", "no-colon", chunked(b"3\r\nabc\r\n0\r\nX-T v\r\n\r\n"))
    add("trailers-bad-syntax", "bad-name", chunked(b"3\r\nabc\r\n0\r\nX(T): v\r\n\r\n"))
    add("trailers-bad-syntax", "nul", chunked(b"3\r\nabc\r\n0\r\nX-T: a\x00b\r\n\r\n"))
    add("trailers-ctl", "0x01", chunked(b"3\r\nabc\r\n0\r\nX-T: a\x01b\r\n\r\n"))
    add("trailers-ctl", "del", chunked(b"3\r\nabc\r\n0\r\nX-T: a\x7fb\r\n\r\n"))
    add("trailers-bare-lf", "line", chunked(b"3\r\nabc\r\n0\r\nX-T: v\n\r\n"))
    add("trailers-over-16KiB", "20-lines", chunked(b"3\r\nabc\r\n0\r\n" + b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 1000) for i in range(20)) + b"\r\n"))

    # ---- methods x framing ---------------------------------------------------------------------
    for m in [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]:
        add("method-framing", m.decode() + "-none", req(m, b"/d/mf"))
        add("method-framing", m.decode() + "-cl0", req(m, b"/d/mf", headers=((b"Host", b"a"), (b"Content-Length", b"0"))))
        add("method-framing", m.decode() + "-cl5", req(m, b"/d/mf", headers=((b"Host", b"a"), (b"Content-Length", b"5")), body=b"12345"))
        add("method-framing", m.decode() + "-chunked", req(m, b"/d/mf", headers=((b"Host", b"a"), (b"Transfer-Encoding", b"chunked")), body=b"5\r\n12345\r\n0\r\n\r\n"))

    # ---- connection management, hop-by-hop ------------------------------------------------------
    add("hop-by-hop", "connection-close", req(headers=((b"Host", b"a"), (b"Connection", b"close"))))
    add("hop-by-hop", "connection-lists", req(headers=((b"Host", b"a"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"X-Keep", b"2"))))
    add("hop-by-hop", "keep-alive", req(headers=((b"Host", b"a"), (b"Keep-Alive", b"timeout=5"))))
    add("hop-by-hop", "proxy-connection", req(headers=((b"Host", b"a"), (b"Proxy-Connection", b"keep-alive"))))
    add("hop-by-hop", "te-trailers", req(headers=((b"Host", b"a"), (b"TE", b"trailers"))))
    add("hop-by-hop", "te-gzip", req(headers=((b"Host", b"a"), (b"TE", b"gzip"))))
    add("hop-by-hop", "upgrade-without-connection", req(headers=((b"Host", b"a"), (b"Upgrade", b"websocket"))))
    add("hop-by-hop", "websocket", req(headers=((b"Host", b"a"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                                              (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"Sec-WebSocket-Version", b"13"))))
    add("hop-by-hop", "trailer-field", req(headers=((b"Host", b"a"), (b"Trailer", b"X-T"))))
    add("expect", "100-continue", req(b"PUT", b"/d/expect", headers=((b"Host", b"a"), (b"Expect", b"100-continue"), (b"Content-Length", b"3")), body=b"abc"))
    add("expect", "100-continue-chunked", req(b"PUT", b"/d/expect", headers=((b"Host", b"a"), (b"Expect", b"100-continue"), (b"Transfer-Encoding", b"chunked")), body=b"3\r\nabc\r\n0\r\n\r\n"))
    add("expect", "other", req(b"GET", b"/d/expect", headers=((b"Host", b"a"), (b"Expect", b"something"))))
    add("forwarded-fields-passed", "xff", req(headers=((b"Host", b"a"), (b"X-Forwarded-For", b"1.2.3.4"), (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"x"))))

    # ---- pipelining -----------------------------------------------------------------------------
    g = req(target=b"/d/p1")
    add("pipelined", "two-gets", g + req(target=b"/d/p2"))
    add("pipelined", "three-mixed", g + req(b"POST", b"/d/p2", headers=((b"Host", b"a"), (b"Content-Length", b"3")), body=b"abc")
        + chunked(b"1\r\nx\r\n0\r\n\r\n", target=b"/d/p3"))
    add("pipelined", "close-stops", req(target=b"/d/p1", headers=((b"Host", b"a"), (b"Connection", b"close"))) + req(target=b"/d/p2"))
    add("pipelined", "http10-stops", req(target=b"/d/p1", version=b"HTTP/1.0", headers=()) + req(target=b"/d/p2"))
    add("pipelined-second-bad", "obs-fold", g + b"GET /d/p2 HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n")
    add("pipelined-second-refused-both", "two-hosts", g + req(target=b"/d/p2", headers=((b"Host", b"a"), (b"Host", b"b"))))
    add("pipelined-second-refused-both", "te-gzip", g + req(b"POST", b"/d/p2", headers=((b"Host", b"a"), (b"Transfer-Encoding", b"gzip"))))
    inner = b"GET /d/smuggled HTTP/1.1\r\nX: 1\r\n"
    add("pipelined-cl-smuggle", "cl-covers-next", req(b"POST", b"/d/p1", headers=((b"Host", b"a"), (b"Content-Length", b"%d" % len(inner))), body=inner) + req(target=b"/d/p2"))
    add("pipelined-cl-smuggle", "chunked-covers-next",
        chunked(b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n", target=b"/d/p1") + req(target=b"/d/p2"))

    # ---- incomplete messages (the client half-closes after sending) ------------------------------
    add("incomplete-head-at-eof", "head", b"GET /d HTTP/1.1\r\nHost: a\r\n")
    add("incomplete-head-at-eof", "request-line", b"GET /d HTTP/1.1")
    add("incomplete-body-at-eof", "cl-body", req(b"POST", b"/d/inc", headers=((b"Host", b"a"), (b"Content-Length", b"10")), body=b"abc"))
    add("incomplete-body-at-eof", "chunked-body", chunked(b"5\r\nhel"))
    add("incomplete-body-at-eof", "chunked-no-last", chunked(b"5\r\nhello\r\n"))
    add("incomplete-pipelined-head-at-eof", "after-first", g + b"GET /d/p2 HTTP/1.1\r\n")

    # ---- the http1-parser fuzz seeds -----------------------------------------------------------------
    for f in sorted(SEEDS.iterdir()):
        add("seed-" + f.name, "seed", f.read_bytes())

    ids = [c.id for c in out]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"duplicate case ids: {dup}"
    return out


if __name__ == "__main__":
    cs = cases()
    classes = sorted({c.cls for c in cs})
    print(f"{len(cs)} cases in {len(classes)} classes")
    for c in cs:
        print(f"{c.id:60} {c.data[:100]!r}")
