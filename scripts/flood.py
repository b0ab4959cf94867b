#!/usr/bin/env python3
"""The attacks of scripts/flood.sh (see there for usage) against a real outrider in front of
nginx, each next to legitimate clients whose latency is compared with a baseline measured in
the same run just before.

  slowloris  --conns N trickling connections (one header byte every --trickle s, reconnecting
             when cut); legit HTTP/1.1 keep-alive clients (outrider-bench, open loop).
  fd         the proxy's RLIMIT_NOFILE lowered to what it holds + 4 (prlimit), --flood-conns
             clients queue up; figures: accept back-off, CPU while exhausted, a keep-alive
             client's requests during it, recovery once the limit is raised again.
  h2         against the h2c listener, each of --kinds in turn (rapid-reset, continuation,
             settings, ping, zero-window); legit h2c clients (outrider-bench --h2c, open loop).

Pinning (default): proxy (--workers 1) on CPU 0; nginx, legit clients and attackers on CPU 1,
attackers at nice 19 so that they use what the legit clients leave (the legit clients'
latency is then the proxy's, not the attacker's CPU share).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import shutil
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hardening_lib as H  # noqa: E402

MiB = 1 << 20


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


class RssSampler:
    """The proxy's RSS every 50 ms in a thread: peak since the last reset."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, H.rss_kib(pid), threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, H.rss_kib(self.pid))
            except OSError:
                return
            time.sleep(0.05)

    def reset(self):
        self.peak = H.rss_kib(self.pid)

    def close(self):
        self.stop.set()
        self.t.join(2)


# ================================================================================ attackers ===
# Run as `flood.py _attack KIND PORT JSON-PARAMS` (own process, nice 19); SIGTERM stops them and
# they print one JSON line of counts.

def attack_slowloris(port, p, stop: threading.Event, out: dict):
    conns, trickle = p["conns"], p["trickle"]
    cut_times, alive_since = [], {}
    out.update(opened=0, cut_408=0, cut_close=0, cut_reset=0, connect_errors=0, other_answers=0)

    async def one(i):
        await asyncio.sleep(i / p.get("ramp", 2000))
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            except (OSError, asyncio.TimeoutError):
                out["connect_errors"] += 1
                await asyncio.sleep(0.2)
                continue
            out["opened"] += 1
            alive_since[i] = t0
            got = b""
            how = None
            try:
                w.write(b"GET /ka HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
                while not stop.is_set():
                    try:
                        data = await asyncio.wait_for(r.read(4096), trickle * random.uniform(0.8, 1.2))
                    except asyncio.TimeoutError:
                        w.write(b"a")
                        await w.drain()
                        continue
                    if not data:
                        how = "close"
                        break
                    got += data
            except (ConnectionError, OSError):
                how = "reset"
            alive_since.pop(i, None)
            if stop.is_set():
                break
            cut_times.append(time.monotonic() - t0)
            if got.startswith(b"HTTP/1.1 408"):
                out["cut_408"] += 1
            elif got:
                out["other_answers"] += 1
            elif how == "reset":
                out["cut_reset"] += 1
            else:
                out["cut_close"] += 1
            w.close()

    async def main():
        tasks = [asyncio.ensure_future(one(i)) for i in range(conns)]
        while not stop.is_set():
            out["open_now"] = len(alive_since)
            await asyncio.sleep(0.1)
        now = time.monotonic()
        out["open_at_stop"] = len(alive_since)
        out["oldest_open_s"] = round(max((now - t for t in alive_since.values()), default=0), 2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    out["cut_p50_s"] = round(pct(cut_times, 0.5), 2) if cut_times else None
    out["cut_min_s"] = round(min(cut_times), 2) if cut_times else None
    out["cut_max_s"] = round(max(cut_times), 2) if cut_times else None


def _scan_frames(buf: bytearray, counts: dict, goaway_codes: dict) -> bytearray:
    pos, n = 0, len(buf)
    while n - pos >= 9:
        length = int.from_bytes(buf[pos:pos + 3], "big")
        if n - pos < 9 + length:
            break
        ftype = buf[pos + 3]
        counts[ftype] = counts.get(ftype, 0) + 1
        if ftype == 7 and length >= 8:
            code = int.from_bytes(buf[pos + 13:pos + 17], "big")
            goaway_codes[code] = goaway_codes.get(code, 0) + 1
        pos += 9 + length
    return buf[pos:]


def attack_h2(kind, port, p, stop: threading.Event, out: dict):
    from h2wire import RawH2  # hyper-h2's frame builders
    import hpack

    out.update(connections=0, closed_by_proxy=0, stalled=0, frames_sent=0, goaway_codes={}, held_streams=0,
               response_heads=0, data_frames=0, rst_received=0)
    lock = threading.Lock()

    def add(k, v=1):
        with lock:
            out[k] += v

    def pump(raw, buf, counts, goaways):
        """Read what is there without blocking; False once the proxy closed."""
        try:
            raw.sock.setblocking(False)
            while True:
                d = raw.sock.recv(1 << 20)
                if not d:
                    return False, buf
                buf += d
                buf = _scan_frames(buf, counts, goaways)
        except BlockingIOError:
            return True, buf
        except OSError:
            return False, buf
        finally:
            try:
                raw.sock.setblocking(True)
            except OSError:
                pass

    def finish(counts, goaways):
        with lock:
            for c, n in goaways.items():
                out["goaway_codes"][str(c)] = out["goaway_codes"].get(str(c), 0) + n
            out["response_heads"] += counts.get(1, 0)
            out["data_frames"] += counts.get(0, 0)
            out["rst_received"] += counts.get(3, 0)

    def flood_loop():
        while not stop.is_set():
            try:
                raw = RawH2(port, timeout=5, rcvbuf=4096 if kind in ("settings", "ping") else None)
            except OSError:
                time.sleep(0.05)
                continue
            add("connections")
            counts, goaways, buf, alive = {}, {}, bytearray(), True
            try:
                if kind == "continuation":
                    enc = hpack.Encoder()
                    frag = enc.encode([hpack.NeverIndexedHeaderTuple(b"x-flood", b"a" * 100)])
                    raw.sock.sendall(raw.preface() + raw.headers(1, raw.request_fields("/ka"), end_stream=True,
                                                                end_headers=False))
                    batch = raw.continuation(1, frag) * 100
                    per = 100
                elif kind == "rapid-reset":
                    raw.sock.sendall(raw.preface())
                    first = raw.headers(1, raw.request_fields("/ka")) + raw.rst(1)
                    raw.sock.sendall(first)
                    # the fields are now in the HPACK table: the same block fits every stream
                    block = raw.block(raw.request_fields("/ka"))
                    sid = 3
                    per = 200
                else:
                    raw.sock.sendall(raw.preface())
                    frame = raw.settings() if kind == "settings" else raw.ping(b"floodpng")
                    batch = frame * ((256 << 10) // len(frame))
                    per = len(batch) // len(frame)
                while alive and not stop.is_set():
                    if kind == "rapid-reset":
                        if sid > (1 << 31) - 1000:
                            break
                        batch = b"".join(raw.headers(s, None, block=block) + raw.rst(s) for s in range(sid, sid + 2 * per, 2))
                        sid += 2 * per
                    try:
                        raw.sock.sendall(batch)
                    except socket.timeout:
                        add("stalled")  # the proxy stopped reading without closing
                        alive = False
                        break
                    except OSError:
                        alive = False
                        break
                    add("frames_sent", per * (2 if kind == "rapid-reset" else 1))
                    if kind not in ("settings", "ping"):
                        alive, buf = pump(raw, buf, counts, goaways)
                if not stop.is_set():
                    # closed (or stalled): read what is left, up to 2 s
                    raw.sock.settimeout(2)
                    try:
                        while True:
                            d = raw.sock.recv(1 << 20)
                            if not d:
                                break
                            buf += d
                            buf = _scan_frames(buf, counts, goaways)
                    except OSError:
                        pass
                    add("closed_by_proxy")
            finally:
                finish(counts, goaways)
                raw.close()

    def zero_window_conn():
        """INITIAL_WINDOW_SIZE 0, --streams GETs of a 1 MiB file, never a WINDOW_UPDATE."""
        while not stop.is_set():
            try:
                raw = RawH2(port, timeout=5)
            except OSError:
                time.sleep(0.1)
                continue
            add("connections")
            counts, goaways, buf = {}, {}, bytearray()
            try:
                raw.sock.sendall(raw.preface({4: 0}) + raw.settings_ack())
                frames = b"".join(raw.headers(s, raw.request_fields("/big.bin")) for s in range(1, 2 * p["streams"], 2))
                raw.sock.sendall(frames)
                add("held_streams", p["streams"])
                alive = True
                while alive and not stop.is_set():
                    alive, buf = pump(raw, buf, counts, goaways)
                    # acknowledge the proxy's SETTINGS and PINGs as a live client would
                    time.sleep(0.2)
                if not stop.is_set():
                    add("closed_by_proxy")
                    add("held_streams", -p["streams"])
                    time.sleep(0.5)
            except OSError:
                add("held_streams", -p["streams"])
            finally:
                finish(counts, goaways)
                raw.close()

    threads = []
    if kind == "zero-window":
        for _ in range(p["conns"]):
            threads.append(threading.Thread(target=zero_window_conn, daemon=True))
    else:
        for _ in range(p.get("threads", 2)):
            threads.append(threading.Thread(target=flood_loop, daemon=True))
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(5)


def run_attacker(kind, port, params):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    out = {"kind": kind}
    if kind == "slowloris":
        attack_slowloris(port, params, stop, out)
    else:
        attack_h2(kind, port, params, stop, out)
    print(json.dumps(out), flush=True)


class Attacker:
    def __init__(self, procs: H.Procs, kind, port, params, cpu):
        cmd = ["nice", "-n", "19", sys.executable, __file__, "_attack", kind, str(port), json.dumps(params)]
        self.name = f"attack-{kind}"
        self.p = procs.start(self.name, cmd, cpu=cpu)
        self.procs = procs

    def stop(self) -> dict:
        self.procs.stop(self.p, signal.SIGTERM, 20)
        out = (self.procs.workdir / f"{self.name}.out").read_text().strip().splitlines()
        if not out:
            raise RuntimeError(f"{self.name}: no result: {(self.procs.workdir / (self.name + '.err')).read_text()[-2000:]}")
        return json.loads(out[-1])


# ================================================================================== helpers ===
def access_log_408s(path: Path) -> list:
    """duration_ms of every 408 in a JSON access log (the proxy's own view of when it cut)."""
    out = []
    try:
        for ln in path.read_text().splitlines():
            try:
                e = json.loads(ln)
            except ValueError:
                continue
            if e.get("status") == 408:
                out.append(e.get("duration_ms") or 0)
    except OSError:
        pass
    return out


def setup(args, listener_extra=None, top_extra=None, name="outrider"):
    H.raise_nofile(65536)
    work = Path(tempfile.mkdtemp(prefix="flood."))
    procs = H.Procs(work)
    load_cpu = None if args.no_pin else args.load_cpu
    proxy_cpu = None if args.no_pin else args.proxy_cpu
    _, app_port = H.start_nginx(procs, work, cpu=load_cpu)
    listener = {"protocols": ["http1", "h2c"]}
    listener.update(listener_extra or {})
    top = {"workers": args.workers}
    top.update(top_extra or {})
    proxy = H.start_proxy(procs, args.outrider, work, listener=listener,
                          clusters=[{"name": "app", "endpoints": [f"127.0.0.1:{app_port}"]}],
                          routes=[{"name": "app", "match": {"path_prefix": "/"}, "cluster": "app"}],
                          top=top, cpu=proxy_cpu, name=name)
    proxy.app_port = app_port
    return work, procs, proxy, load_cpu


def legit(args, proxy, load_cpu, h2c=False, duration=None):
    url = f"http://127.0.0.1:{proxy.port}/ka"
    return H.bench(args.bench, url, f"{duration or args.window}s", args.legit_conns, rate=args.rate, h2c=h2c,
                   streams=args.legit_streams if h2c else 1, cpu=load_cpu, extra=["--warmup", "1s"])


def direct(args, proxy, load_cpu):
    """The control: legit HTTP/1.1 clients to the app itself, not through the proxy."""
    url = f"http://127.0.0.1:{proxy.app_port}/ka"
    return H.bench(args.bench, url, f"{args.window}s", args.legit_conns, rate=args.rate, h2c=False,
                   streams=1, cpu=load_cpu, extra=["--warmup", "1s"])


def lat(res):
    lm = res["latency_ms"]
    return lm["p50"], lm["p99"]


def fmt_lat(res):
    p50, p99 = lat(res)
    return f"p50 {p50:.3f} ms, p99 {p99:.3f} ms ({res['requests']:,} requests, {H.bench_errors(res)} errors)"


def report(lines, args):
    print("\n".join(lines), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(args.result, indent=2) + "\n")


# ================================================================================ slowloris ===
def mode_slowloris(args) -> int:
    log_path = Path(tempfile.mkdtemp(prefix="flood-log.")) / "access.log"
    work, procs, proxy, load_cpu = setup(
        args, listener_extra={"limits": {"max_connections": max(10000, args.conns + 1000)},
                              "timeouts": {"header_read": f"{args.header_read}s", "idle": "60s"}},
        top_extra={"access_log": {"format": "json", "path": str(log_path)}})
    failures, res = [], {}
    try:
        H.log(f"flood slowloris: outrider pid {proxy.pid} :{proxy.port}; workdir {work}")
        rss0 = H.rss_kib(proxy.pid)
        base = legit(args, proxy, load_cpu)
        control_base = direct(args, proxy, load_cpu)
        att = Attacker(procs, "slowloris", proxy.port,
                       {"conns": args.conns, "trickle": args.trickle, "ramp": 2000}, load_cpu)
        # all trickling before the measurement starts
        deadline = time.monotonic() + args.conns / 2000 + 10
        while time.monotonic() < deadline:
            text = H.metrics_text(proxy.admin_port)
            if H.metric_sum(text, "outrider_downstream_connections_active") >= args.conns * 0.98:
                break
            time.sleep(0.2)
        active = H.metric_sum(H.metrics_text(proxy.admin_port), "outrider_downstream_connections_active")
        fds_attack = H.fd_count(proxy.pid)
        sampler = RssSampler(proxy.pid)
        under = legit(args, proxy, load_cpu, duration=max(args.window, args.header_read + 3))
        control_under = direct(args, proxy, load_cpu)
        sampler.close()
        a = att.stop()
        ratio = lat(under)[1] / max(lat(base)[1], 1e-9)
        control_ratio = lat(control_under)[1] / max(lat(control_base)[1], 1e-9)
        res = {"baseline": base, "under_attack": under, "attacker": a, "p99_ratio": ratio,
               "control": {"baseline": control_base, "under_attack": control_under, "p99_ratio": control_ratio},
               "rss_kib": {"idle": rss0, "peak_under_attack": sampler.peak}, "active_at_start": active}
        if ratio >= 2:
            failures.append(f"p99 under attack {ratio:.2f}x the baseline (limit 2x)")
        if H.bench_errors(base) or H.bench_errors(under):
            failures.append("the legit clients had errors")
        cut = a["cut_408"] + a["cut_close"] + a["cut_reset"]
        if cut == 0:
            failures.append("no slow connection was cut")
        if a["other_answers"]:
            failures.append(f"{a['other_answers']} slow connections got an answer other than 408")
        if not proxy.alive():
            failures.append("the proxy died")
        per_conn = (sampler.peak - rss0) * 1024 / max(active, 1)
        time.sleep(1.5)  # the access log is written in batches
        cut_ms = access_log_408s(log_path)
        res["proxy_408_duration_ms"] = {"count": len(cut_ms), "min": min(cut_ms, default=None),
                                        "p50": pct(cut_ms, .5), "p99": pct(cut_ms, .99), "max": max(cut_ms, default=None)}
        if len(cut_ms) < a["cut_408"]:
            failures.append(f"{len(cut_ms)} 408s in the access log for {a['cut_408']} seen by the client")
        if cut_ms and max(cut_ms) > args.header_read * 1000 + 500:
            failures.append(f"the proxy sent a 408 {max(cut_ms):.0f} ms after the head began (header_read {args.header_read} s)")
        lines = [
            f"slowloris: {args.conns:,} connections trickling one header byte every ~{args.trickle} s "
            f"(header_read {args.header_read} s); {int(active):,} open at the start of the measurement "
            f"({fds_attack:,} proxy fds)",
            f"  legit keep-alive clients, {args.rate}/s over {args.legit_conns} connections:",
            f"    baseline      {fmt_lat(base)}",
            f"    under attack  {fmt_lat(under)}",
            f"    p99 ratio {ratio:.2f} (limit 2.00)",
            f"    control (the same clients to the app directly, no proxy): p99 {lat(control_base)[1]:.3f} -> "
            f"{lat(control_under)[1]:.3f} ms, ratio {control_ratio:.2f}",
            f"  proxy RSS: idle {rss0:,} KiB, peak under attack {sampler.peak:,} KiB "
            f"(+{per_conn / 1024:.1f} KiB per slow connection)",
            f"  slow connections: {a['opened']:,} opened, cut by header_read: {a['cut_408']:,} with 408, "
            f"{a['cut_close']:,} closed without an answer, {a['cut_reset']:,} reset; time to cut "
            f"min {a['cut_min_s']} / p50 {a['cut_p50_s']} / max {a['cut_max_s']} s; "
            f"oldest still open at the end {a['oldest_open_s']} s; connect errors {a['connect_errors']}",
            f"  408s in the proxy's access log: {len(cut_ms):,}, sent after min {min(cut_ms, default=0):.0f} / "
            f"p50 {pct(cut_ms, .5):.0f} / p99 {pct(cut_ms, .99):.0f} / max {max(cut_ms, default=0):.0f} ms "
            f"(the client's figures above include its own lag: it runs at nice 19 on a busy CPU)",
            f"  result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}",
        ]
        args.result = res
        report(lines, args)
        return 1 if failures else 0
    finally:
        procs.stop_all()


# ======================================================================================= fd ===
def mode_fd(args) -> int:
    work, procs, proxy, load_cpu = setup(args, top_extra={"workers": 1},
                                         listener_extra={"timeouts": {"header_read": "60s", "idle": "60s"}})
    failures = []
    flood = []
    try:
        pid = proxy.pid
        H.log(f"flood fd: outrider pid {pid} :{proxy.port}; workdir {work}")
        # a keep-alive client that was there before (its upstream connection is pooled)
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        held_file = held.makefile("rb")

        def get(sock, f, path="/ka"):
            t0 = time.monotonic()
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: fd\r\n\r\n".encode())
            return read_answer(f), time.monotonic() - t0

        def read_answer(f):
            status = f.readline()
            length = 0
            while True:
                ln = f.readline()
                if ln in (b"\r\n", b""):
                    break
                if ln.lower().startswith(b"content-length:"):
                    length = int(ln.split(b":")[1])
            f.read(length)
            parts = status.split(b" ")
            return parts[1].decode() if len(parts) > 1 else "EOF"

        base = [get(held, held_file) for _ in range(200)]
        base_ms = [t * 1000 for s, t in base if s == "200"]
        soft, hard = map(int, open(f"/proc/{pid}/limits").read().split("Max open files")[1].split()[:2])
        open_fds = H.fd_count(pid)
        limit = open_fds + 4
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={limit}:{hard}"], check=True)
        stderr_before = proxy.stderr().count("accept paused")
        t_exhaust = time.monotonic()
        # clients that connect and wait (the kernel completes their handshakes; the proxy can
        # accept 4 of them, then accept fails with EMFILE)
        for _ in range(args.flood_conns):
            flood.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
        time.sleep(0.5)
        fds_exhausted = H.fd_count(pid)
        # quiet window: nothing but the back-off runs
        cpu0, wk0, w0 = H.cpu_seconds(pid), H.thread_wakeups(pid, "outrider-w"), time.monotonic()
        time.sleep(args.window)
        quiet_s = time.monotonic() - w0
        cpu_q = H.cpu_seconds(pid) - cpu0
        wakeups = (H.thread_wakeups(pid, "outrider-w") - wk0) / quiet_s
        # accept attempts, counted with strace when there is one (after the CPU window: ptrace
        # slows the process it watches)
        attempts = None
        if shutil.which("strace"):
            trace = work / "accept.strace"
            subprocess.run(["timeout", "-s", "INT", "2", "strace", "-f", "-qq", "-tt", "-e", "trace=accept4,accept",
                            "-p", str(pid), "-o", str(trace)], capture_output=True)
            stamps = []
            for ln in trace.read_text().splitlines():
                if "EMFILE" in ln:
                    hh, mm, ss = ln.split()[1].split(":")
                    stamps.append(int(hh) * 3600 + int(mm) * 60 + float(ss))
            if len(stamps) >= 2:
                gaps = [b - a for a, b in zip(stamps, stamps[1:])]
                attempts = (len(stamps), statistics.median(gaps) * 1000)
        # the held client during exhaustion
        during = [get(held, held_file) for _ in range(200)]
        during_ms = [t * 1000 for s, t in during if s == "200"]
        during_bad = [s for s, _ in during if s != "200"]
        paused_logs = proxy.stderr().count("accept paused") - stderr_before
        exhausted_s = time.monotonic() - t_exhaust

        # recovery: the limit back, every queued client sends its request; time until a new
        # client is answered, and until every queued one is
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:{hard}"], check=True)
        t_free = time.monotonic()
        for s in flood:
            s.sendall(b"GET /ka HTTP/1.1\r\nHost: fd\r\nConnection: close\r\n\r\n")
        probe_ok = None
        while time.monotonic() - t_free < 5:
            try:
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as c:
                    st, _ = get(c, c.makefile("rb"))
                    if st == "200":
                        probe_ok = time.monotonic() - t_free
                        break
            except OSError:
                pass
            time.sleep(0.005)
        statuses = {}
        for s in flood:
            s.settimeout(max(0.1, 5 - (time.monotonic() - t_free)))
            try:
                st = read_answer(s.makefile("rb"))
            except OSError as e:
                st = type(e).__name__
            statuses[st] = statuses.get(st, 0) + 1
        all_ok = time.monotonic() - t_free
        if cpu_q / quiet_s > 0.05:
            failures.append(f"the proxy used {cpu_q / quiet_s:.1%} of a CPU while out of fds (spinning?)")
        if during_bad:
            failures.append(f"the existing connection got {during_bad[:5]} while fds were exhausted")
        if probe_ok is None:
            failures.append("no new client served within 5 s of the limit being raised")
        if set(statuses) != {"200"}:
            failures.append(f"queued clients after recovery: {statuses} (all must be 200)")
        if not proxy.alive():
            failures.append("the proxy died")
        backoff_ms = attempts[1] if attempts else None
        lines = [
            f"fd exhaustion: RLIMIT_NOFILE of the proxy (1 worker) set to {limit} ({open_fds} open + 4) with "
            f"prlimit; {args.flood_conns} clients connected and waited ({fds_exhausted} proxy fds)",
            f"  while exhausted ({quiet_s:.1f} s quiet window): CPU {cpu_q / quiet_s:.2%} of a core; the worker woke "
            f"{wakeups:.1f} times/s; " + (f"accept failed with EMFILE {attempts[0]} times in 2 s (strace), "
                                           f"{attempts[1]:.0f} ms apart (median)" if attempts else "no strace")
            + f"; 'accept paused' logged {paused_logs} times in {exhausted_s:.1f} s",
            f"  existing keep-alive connection: baseline p50 {pct(base_ms, .5):.3f} / p99 {pct(base_ms, .99):.3f} ms; "
            f"while exhausted p50 {pct(during_ms, .5):.3f} / p99 {pct(during_ms, .99):.3f} ms; "
            f"{len(during_ms)}/{len(during)} answered 200",
            f"  recovery once the limit was raised: first new client answered after "
            f"{probe_ok * 1000 if probe_ok is not None else float('nan'):.0f} ms; all {args.flood_conns} queued "
            f"clients answered by {all_ok * 1000:.0f} ms ({statuses})",
            f"  result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}",
        ]
        args.result = {"limit": limit, "cpu_fraction": cpu_q / quiet_s, "wakeups_per_s": wakeups,
                       "backoff_ms": backoff_ms, "paused_logs": paused_logs,
                       "held_baseline_ms": [pct(base_ms, .5), pct(base_ms, .99)],
                       "held_during_ms": [pct(during_ms, .5), pct(during_ms, .99)],
                       "recovery_first_ms": probe_ok * 1000 if probe_ok else None, "recovery_all_ms": all_ok * 1000,
                       "queued_statuses": statuses}
        report(lines, args)
        held.close()
        return 1 if failures else 0
    finally:
        for s in flood:
            s.close()
        procs.stop_all()


# ======================================================================================= h2 ===
H2_KINDS = ["rapid-reset", "continuation", "settings", "ping", "zero-window"]
REASON = {"rapid-reset": "rapid_reset", "continuation": "continuation_flood", "settings": "flood", "ping": "flood"}


def mode_h2(args) -> int:
    kinds = args.kinds.split(",")
    for k in kinds:
        if k not in H2_KINDS:
            raise SystemExit(f"--kinds: unknown {k!r} (known: {', '.join(H2_KINDS)})")
    work, procs, proxy, load_cpu = setup(args)
    attack_cpu = None if args.no_pin else (args.attack_cpu if args.attack_cpu is not None else args.load_cpu)
    failures, lines, results = [], [], {}
    try:
        H.log(f"flood h2: outrider pid {proxy.pid} :{proxy.port}; workdir {work}")
        rss_start = H.rss_kib(proxy.pid)
        lines.append(f"h2 floods against an h2c listener (workers {args.workers}); legit: outrider-bench --h2c "
                     f"--rate {args.rate} -c {args.legit_conns} -m {args.legit_streams}, {args.window} s each phase; "
                     f"proxy RSS at start {rss_start:,} KiB")
        for kind in kinds:
            before = H.metrics_text(proxy.admin_port)
            base = legit(args, proxy, load_cpu, h2c=True)
            control_base = direct(args, proxy, load_cpu)
            rss0 = H.rss_kib(proxy.pid)
            sampler = RssSampler(proxy.pid)
            params = {"threads": 2, "conns": args.zw_conns, "streams": args.zw_streams}
            att = Attacker(procs, kind, proxy.port, params, attack_cpu)
            time.sleep(1.0)
            under = legit(args, proxy, load_cpu, h2c=True)
            control_under = direct(args, proxy, load_cpu)
            a = att.stop()
            sampler.close()
            time.sleep(0.5)
            after = H.metrics_text(proxy.admin_port)
            closed = {}
            for reason in ("rapid_reset", "continuation_flood", "flood", "empty_frames", "protocol_error", "idle"):
                d = H.metric_sum(after, "outrider_http2_connections_closed_total", reason=reason) - \
                    H.metric_sum(before, "outrider_http2_connections_closed_total", reason=reason)
                if d:
                    closed[reason] = int(d)
            ratio = lat(under)[1] / max(lat(base)[1], 1e-9)
            ok = ratio < 2 and not H.bench_errors(base) and not H.bench_errors(under) and proxy.alive()
            why = []
            if ratio >= 2:
                why.append(f"p99 ratio {ratio:.2f} >= 2")
            if H.bench_errors(under) or H.bench_errors(base):
                why.append(f"legit errors {H.bench_errors(base)} / {H.bench_errors(under)}: {under.get('status')} {under.get('errors')}")
            if kind in REASON and not closed.get(REASON[kind]):
                why.append(f"no connection closed for reason {REASON[kind]}")
            if a.get("stalled"):
                why.append(f"{a['stalled']} flooding connections stalled (the proxy stopped reading without closing)")
            if not proxy.alive():
                why.append("the proxy died")
            if why:
                failures.append(f"{kind}: " + "; ".join(why))
            control_ratio = lat(control_under)[1] / max(lat(control_base)[1], 1e-9)
            results[kind] = {"baseline": base, "under_attack": under, "p99_ratio": ratio, "attacker": a,
                             "control": {"baseline": control_base, "under_attack": control_under,
                                         "p99_ratio": control_ratio},
                             "closed_by_reason": closed, "rss_kib": {"before": rss0, "peak": sampler.peak}}
            if kind == "zero-window":
                what = (f"{a['connections']} connections x {args.zw_streams} streams of a 1 MiB file with "
                        f"INITIAL_WINDOW_SIZE 0; {a['response_heads']} response heads, {a['data_frames']} DATA frames, "
                        f"{a['rst_received']} RST_STREAM received; {a['closed_by_proxy']} connections closed by the proxy")
            else:
                what = (f"{a['connections']} attacking connections, {a['frames_sent']:,} frames sent, "
                        f"{a['closed_by_proxy']} closed by the proxy (GOAWAY codes {a['goaway_codes'] or 'none'}), "
                        f"{a['stalled']} stalled")
            lines += [
                f"  {kind}: {what}",
                f"    closed_total by reason: {closed or 'none'}",
                f"    legit baseline {fmt_lat(base)}",
                f"    legit under    {fmt_lat(under)}",
                f"    control (HTTP/1.1 clients to the app directly, no proxy): p99 {lat(control_base)[1]:.3f} -> "
                f"{lat(control_under)[1]:.3f} ms, ratio {control_ratio:.2f}",
                f"    p99 ratio {ratio:.2f}; proxy RSS {rss0:,} -> peak {sampler.peak:,} KiB "
                f"(+{(sampler.peak - rss0) / 1024:.1f} MiB)  {'ok' if not why else 'FAIL'}",
            ]
            time.sleep(1)
        lines.append(f"  result: {'PASS' if not failures else 'FAIL: ' + ' | '.join(failures)}")
        args.result = results
        report(lines, args)
        return 1 if failures else 0
    finally:
        procs.stop_all()


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "_attack":
        sys.path.insert(0, str(H.REPO / "Tests" / "integration"))
        run_attacker(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["slowloris", "fd", "h2"])
    ap.add_argument("--conns", type=int, default=5000, help="slowloris: trickling connections")
    ap.add_argument("--trickle", type=float, default=1.0, help="slowloris: seconds between header bytes")
    ap.add_argument("--header-read", type=int, default=10, help="slowloris: the listener's header_read (s)")
    ap.add_argument("--flood-conns", type=int, default=200, help="fd: clients queued while out of fds")
    ap.add_argument("--kinds", default=",".join(H2_KINDS), help="h2: floods, in order")
    ap.add_argument("--zw-conns", type=int, default=8, help="h2 zero-window: connections")
    ap.add_argument("--zw-streams", type=int, default=100, help="h2 zero-window: streams per connection")
    ap.add_argument("--rate", type=int, default=2000, help="legit requests per second (open loop)")
    ap.add_argument("--legit-conns", type=int, default=10)
    ap.add_argument("--legit-streams", type=int, default=4, help="h2: streams per legit connection")
    ap.add_argument("--window", type=float, default=8, help="seconds per measured phase")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--proxy-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--attack-cpu", default=None,
                    help="h2: the attackers' CPU (default: --load-cpu, next to the legit clients and the app)")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--json", help="also write the figures as JSON here")
    ap.add_argument("--outrider", default=os.environ.get("OUTRIDER_BIN") or str(H.REPO / ".build/release/outrider"))
    ap.add_argument("--bench", default=os.environ.get("OUTRIDER_BENCH_BIN") or str(H.REPO / ".build/release/outrider-bench"))
    args = ap.parse_args()
    args.window = int(args.window) if float(args.window).is_integer() else args.window
    args.result = {}
    return {"slowloris": mode_slowloris, "fd": mode_fd, "h2": mode_h2}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
