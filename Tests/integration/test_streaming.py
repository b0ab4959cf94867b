"""Bodies are streamed, not buffered: 50 MiB up and down with the proxy's memory growing < 10 MiB.

Memory is read from /proc/PID/status: VmHWM (peak resident set) catches a transient buffer that
VmRSS after the transfer could miss; both are reported on failure."""

import hashlib
import time

from upstream_server import _BLOCK

MIB = 1024 * 1024
SIZE = 50 * MIB
LIMIT = 10 * MIB


def _warm(p):
    for _ in range(3):
        with p.conn() as c:
            c.request("POST", "/echo/warm", body=b"w" * 65536)
            assert c.read_response().status == 200


def _mem(p):
    return {"rss": p.proc_status("VmRSS"), "hwm": p.proc_status("VmHWM")}


def test_50mib_upload_streamed(proxy, upstream):
    _warm(proxy)
    before = _mem(proxy)
    block = bytes(range(256)) * 4096  # 1 MiB
    h = hashlib.sha256()
    with proxy.conn(timeout=60) as c:
        c.send(f"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n".encode())
        for _ in range(SIZE // len(block)):
            c.send(block)
            h.update(block)
        r = c.read_response(timeout=60)
    after = _mem(proxy)
    assert r.status == 200, r
    assert r.json() == {"bytes": SIZE, "sha256": h.hexdigest()}
    grow_hwm, grow_rss = after["hwm"] - before["hwm"], after["rss"] - before["rss"]
    assert grow_hwm < LIMIT and grow_rss < LIMIT, (
        f"memory grew during a 50 MiB upload: peak +{grow_hwm / MIB:.1f} MiB, rss +{grow_rss / MIB:.1f} MiB "
        f"(before {before}, after {after})"
    )


def test_50mib_upload_chunked_streamed(proxy, upstream):
    _warm(proxy)
    before = _mem(proxy)
    block = bytes(range(256)) * 256  # 64 KiB
    h = hashlib.sha256()
    frame = b"%x\r\n%s\r\n" % (len(block), block)
    with proxy.conn(timeout=60) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(SIZE // len(block)):
            c.send(frame)
            h.update(block)
        c.send(b"0\r\n\r\n")
        r = c.read_response(timeout=60)
    after = _mem(proxy)
    assert r.status == 200, r
    assert r.json() == {"bytes": SIZE, "sha256": h.hexdigest()}
    grow_hwm = after["hwm"] - before["hwm"]
    assert grow_hwm < LIMIT, f"peak memory grew {grow_hwm / MIB:.1f} MiB during a chunked 50 MiB upload"


def test_50mib_download_streamed(proxy, upstream):
    _warm(proxy)
    before = _mem(proxy)
    h = hashlib.sha256()
    got = [0]

    def sink(piece):
        got[0] += len(piece)
        h.update(piece)

    with proxy.conn(timeout=60) as c:
        c.request("GET", f"/big/{SIZE}")
        # read slowly at first so that the proxy must apply back-pressure instead of buffering
        head = c.read_head(timeout=10)
        assert head.status == 200, head
        time.sleep(0.5)
        mid = _mem(proxy)
        c.buf = head.raw_head + c.buf
        r = c.read_response(timeout=60, stream_to=sink)
    after = _mem(proxy)
    assert r.status == 200
    assert got[0] == SIZE
    expected = hashlib.sha256()
    left = SIZE
    while left:
        k = min(len(_BLOCK), left)
        expected.update(_BLOCK[:k])
        left -= k
    assert h.hexdigest() == expected.hexdigest(), "downloaded bytes differ from what the upstream sent"
    grow_hwm = after["hwm"] - before["hwm"]
    assert grow_hwm < LIMIT, (
        f"peak memory grew {grow_hwm / MIB:.1f} MiB during a 50 MiB download "
        f"(before {before}, while the client paused {mid}, after {after})"
    )
