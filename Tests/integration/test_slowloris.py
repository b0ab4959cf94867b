"""Slowloris (issue #9): hundreds of connections trickling a request head one byte at a time
are cut at `header_read` (408 or close), whatever their trickle keeps arriving, while a
keep-alive client next to them is served throughout. The full-size figures (5,000
connections, latency ratio to a baseline) come from `scripts/flood.sh slowloris`."""
import select
import socket
import time

SLOW = 300
HEADER_READ = 2.0


def test_trickling_connections_cut_at_header_read_while_others_are_served(proxy_factory, upstream):
    p = proxy_factory(upstream=upstream, top={"workers": 1, "access_log": {"format": "off"}},
                      listener={"timeouts": {"header_read": f"{HEADER_READ:g}s", "idle": "30s"}})
    legit = p.conn()
    legit.request("GET", "/warm")
    assert legit.read_response().status == 200

    opened, got, closed_at = {}, {}, {}
    for _ in range(SLOW):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        s.setblocking(False)
        s.send(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        opened[s] = time.monotonic()
        got[s] = b""
    t0 = time.monotonic()
    next_byte = t0
    statuses, worst = [], 0.0
    try:
        while len(closed_at) < SLOW and time.monotonic() - t0 < HEADER_READ + 4:
            now = time.monotonic()
            if now >= next_byte:  # one more header byte on every slow connection still open
                for s in opened:
                    if s not in closed_at:
                        try:
                            s.send(b"a")
                        except OSError:
                            closed_at[s] = time.monotonic()
                next_byte += 0.25
            readable, _, _ = select.select([s for s in opened if s not in closed_at], [], [], 0)
            for s in readable:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data:
                    got[s] += data
                else:
                    closed_at[s] = time.monotonic()
            t = time.monotonic()
            legit.request("GET", f"/legit/{len(statuses)}")
            r = legit.read_response(timeout=5)
            worst = max(worst, time.monotonic() - t)
            statuses.append(r.status)
            time.sleep(0.01)
    finally:
        for s in opened:
            s.close()
        legit.close()

    assert len(closed_at) == SLOW, f"{SLOW - len(closed_at)} trickling connections still open " \
                                   f"{HEADER_READ + 4:g} s after they started (header_read {HEADER_READ:g}s)"
    lived = sorted(closed_at[s] - opened[s] for s in opened)
    assert lived[0] >= HEADER_READ - 0.3, f"a trickling connection was cut after {lived[0]:.2f} s, before header_read"
    assert lived[-1] <= HEADER_READ + 2.5, f"a trickling connection lived {lived[-1]:.2f} s (header_read {HEADER_READ:g}s)"
    answers = {bytes(v[:12]) for v in got.values()}
    assert answers <= {b"", b"HTTP/1.1 408"}, f"trickling connections got answers other than 408: {answers}"
    assert statuses and set(statuses) == {200}, f"the keep-alive client's statuses: {sorted(set(statuses))}"
    assert len(statuses) >= 50, f"only {len(statuses)} requests of the keep-alive client were served"
    assert worst < 1.0, f"a request of the keep-alive client took {worst:.2f} s while the others trickled"
    assert not any("/slow" in rec.target for rec in upstream.records), "a trickled head reached the upstream"
