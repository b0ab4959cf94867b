#!/usr/bin/env python3
"""The soak of scripts/soak.sh (see there for usage): millions of mixed requests through a real
outrider in front of nginx, the proxy's RSS and open fds sampled into a CSV, a flatness
criterion, a chart.

Load (all at once, on the load CPU):
  one wrk per kind of request (scripts/soak.lua checks every answer):
    ka, close, chunked, notfound, dead, toolarge, bighead (see soak.lua for what each sends
    and must get back);
  this script's abort client (`soak.py _aborts`): connections closed mid-head, mid-body
  (content-length and chunked), and while waiting for the answer of a slow app (`soak.py
  _slow-app`, 300 ms per answer); one in 20 waits are carried to the end and must be 200.

The run has two phases with the same load: a warm-up (--warmup of the requests) and the rest.
After each, the load stops, the proxy's connections close (idle timeouts) and its pools give
back what they kept for the load (one trim interval, 5 s, twice over): the RSS of the quiet
proxy after the warm-up and after the whole run are the same state, 90% of the requests apart.

Criterion (printed with the figures; the exit status is 1 when any part fails):
  - the quiet RSS after the run exceeds the quiet RSS after the warm-up by at most
    --quiet-growth KiB (a leak of 0.1 byte per request over 9 M requests would break 1 MiB);
    the RSS while loaded moves with the load's concurrency (buffers in use) and is reported
    (range after warm-up), not judged, and
  - the proxy's open fds, once the load has stopped and its idle timeouts have run, are back to
    the count it had before the load (within --fd-settle seconds), and
  - no unexpected answer (by kind: a wrong status/body/x-outrider-error, a socket error, a
    response over wrk's 2 s timeout, a connect failure or an early answer in the abort client),
  - and the proxy exits 0 on SIGTERM at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hardening_lib as H  # noqa: E402

KINDS = ["ka", "close", "chunked", "notfound", "dead", "toolarge", "bighead"]
DEFAULT_CONNS = "ka=32,close=6,chunked=8,notfound=4,dead=3,toolarge=2,bighead=2"


# ---------------------------------------------------------------------------- slow app ---
async def _slow_app(port: int, delay: float):
    async def handle(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nslow\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# ------------------------------------------------------------------------- abort client ---
ABORTS = ["mid_head", "mid_body", "mid_chunked", "waiting"]
SLOW_DELAY = 0.3  # the slow app's delay before each answer


async def _aborts(port: int, rate: float, stop: asyncio.Event, out: dict):
    counts = out["counts"]
    bad = out["unexpected"]
    samples = out["samples"]
    sem = asyncio.Semaphore(256)

    def unexpected(kind, what):
        bad[kind] = bad.get(kind, 0) + 1
        if len(samples) < 10:
            samples.append(f"{kind}: {what}")

    def close(writer):
        if random.random() < 0.5:  # half of them with RST instead of FIN
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    async def one(kind: str, n: int):
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            except (OSError, asyncio.TimeoutError) as e:
                unexpected(kind, f"connect: {e!r}")
                return
            try:
                if kind == "mid_head":
                    writer.write(b"GET /ka HTTP/1.1\r\nHost: soak\r\nX-Partial: abc")
                elif kind == "mid_body":
                    writer.write(b"POST /ka HTTP/1.1\r\nHost: soak\r\nContent-Length: 1000\r\n\r\n" + b"b" * 300)
                elif kind == "mid_chunked":
                    writer.write(b"POST /ka HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"64\r\n" + b"c" * 100 + b"\r\n40\r\n" + b"c" * 10)
                else:
                    writer.write(b"GET /slow/x HTTP/1.1\r\nHost: soak\r\n\r\n")
                await writer.drain()
                sent = time.monotonic()
                if kind == "waiting" and n % 20 == 0:
                    # carried to the end: the slow path itself must work
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                    body = await asyncio.wait_for(reader.readexactly(5), 5)
                    if not head.startswith(b"HTTP/1.1 200") or body != b"slow\n":
                        unexpected("waited", f"{head[:60]!r} {body!r}")
                    else:
                        counts["waited"] = counts.get("waited", 0) + 1
                    close(writer)
                    return
                await asyncio.sleep(random.uniform(0.005, 0.05) if kind != "waiting" else random.uniform(0.02, 0.2))
                if kind == "waiting" and reader._buffer:
                    # The app answers 300 ms after the head: earlier bytes are wrong. Later ones
                    # are this client being late (its loop starved on a busy load CPU): the
                    # answer must then be the app's.
                    late = time.monotonic() - sent >= SLOW_DELAY
                    if not late or not bytes(reader._buffer).startswith(b"HTTP/1.1 200"):
                        unexpected(kind, f"answered after {time.monotonic() - sent:.3f} s: {bytes(reader._buffer[:80])!r}")
                    else:
                        counts["waiting_answered_late_client"] = counts.get("waiting_answered_late_client", 0) + 1
                        return
                counts[kind] = counts.get(kind, 0) + 1
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError) as e:
                unexpected(kind, repr(e))
            finally:
                close(writer)

    tasks = set()
    n = 0
    t0 = time.monotonic()
    while not stop.is_set():
        kind = ABORTS[n % len(ABORTS)]
        t = asyncio.ensure_future(one(kind, n // len(ABORTS)))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        n += 1
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
    if tasks:
        await asyncio.wait(tasks, timeout=10)


def run_aborts(port: int, rate: float):
    out = {"counts": {}, "unexpected": {}, "samples": []}

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await _aborts(port, rate, stop, out)

    asyncio.run(main())
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------- soak ---
def parse_conns(s: str) -> dict:
    d = {}
    for part in s.split(","):
        k, _, v = part.partition("=")
        if k not in KINDS or not v.isdigit():
            raise SystemExit(f"--conns: bad entry {part!r} (kinds: {', '.join(KINDS)})")
        d[k] = int(v)
    return d


def draw(csv_path: Path, png_path: Path, warm_t: float, title: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not available to this python: chart skipped (see scripts/soak.sh)"
    rows = list(csv.DictReader(open(csv_path)))
    t = [float(r["t_s"]) for r in rows]
    rss = [int(r["rss_kib"]) / 1024 for r in rows]
    fds = [int(r["fds"]) for r in rows]
    req = [int(float(r["requests"])) / 1e6 for r in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a1.plot(t, rss, color="tab:blue", label="RSS (MiB)")
    a1.set_ylabel("RSS (MiB)")
    a1.set_ylim(bottom=0, top=max(rss) * 1.25)
    a1b = a1.twinx()
    a1b.plot(t, req, color="tab:gray", linestyle=":", label="requests (millions)")
    a1b.set_ylabel("requests (millions)", color="tab:gray")
    a2.plot(t, fds, color="tab:orange", label="open fds")
    a2.set_ylabel("open fds")
    a2.set_ylim(bottom=0, top=max(fds) * 1.25 + 1)
    a2.set_xlabel("seconds")
    for a in (a1, a2):
        a.axvline(warm_t, color="tab:red", linestyle="--", linewidth=0.8)
        a.grid(alpha=0.3)
    a1.text(warm_t, max(rss) * 1.1, " end of warm-up", color="tab:red", fontsize=8)
    a1.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    return None


def soak(args) -> int:
    H.raise_nofile(65536)
    conns = parse_conns(args.conns)
    work = Path(tempfile.mkdtemp(prefix="soak."))
    procs = H.Procs(work)
    load_cpu = None if args.no_pin else args.load_cpu
    results_csv, png, md = Path(args.csv), Path(args.png), Path(args.md)
    for p in (results_csv, png, md):
        p.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    try:
        _, app_port = H.start_nginx(procs, work, cpu=load_cpu)
        slow_port = H.free_port()
        slow = procs.start("slow-app", [sys.executable, __file__, "_slow-app", str(slow_port)], cpu=load_cpu)
        if not H.wait_port(slow_port, 10, lambda: slow.poll() is None):
            raise RuntimeError("the slow app did not start")
        dead_sock, dead = H.dead_port()
        pool = {"max_idle_per_endpoint": 64, "idle_timeout": "2s"}
        proxy = H.start_proxy(
            procs, args.outrider, work,
            listener={"protocols": ["http1"],
                      "limits": {"max_connections": 10000, "max_header_bytes": "8KiB", "max_headers": 100,
                                 "max_request_body": "1KiB"},
                      "timeouts": {"header_read": "10s", "idle": "5s"}},
            clusters=[{"name": "app", "endpoints": [f"127.0.0.1:{app_port}"], "pool": pool},
                      {"name": "slow", "endpoints": [f"127.0.0.1:{slow_port}"], "pool": pool},
                      {"name": "dead", "endpoints": [f"127.0.0.1:{dead}"], "connect_timeout": "1s", "pool": pool}],
            routes=[{"name": "dead", "match": {"path_prefix": "/dead"}, "cluster": "dead"},
                    {"name": "slow", "match": {"path_prefix": "/slow"}, "cluster": "slow", "timeout": "15s"},
                    {"name": "app", "match": {"path_prefix": "/"}, "cluster": "app"}],
            top={"workers": args.workers},
            cpu=None if args.no_pin or args.proxy_cpu == "any" else args.proxy_cpu)
        pid = proxy.pid
        time.sleep(0.5)
        fds_idle = H.fd_count(pid)
        rss_start = H.rss_kib(pid)
        url = f"http://127.0.0.1:{proxy.port}"
        H.log(f"soak: outrider pid {pid} on {url} (admin {proxy.admin_port}), nginx app :{app_port}, "
              f"slow app :{slow_port}, dead :{dead}; idle: {fds_idle} fds, RSS {rss_start} KiB; workdir {work}")

        t0 = time.monotonic()
        rows = []
        f = open(results_csv, "w", newline="")
        w = csv.writer(f)
        w.writerow(["t_s", "rss_kib", "fds", "requests", "connections_active", "cpu_s"])
        cpu0 = H.cpu_seconds(pid)

        def sample():
            try:
                text = H.metrics_text(proxy.admin_port)
                reqs = H.metric_sum(text, "outrider_requests_total")
                active = H.metric_sum(text, "outrider_downstream_connections_active")
            except OSError:
                reqs, active = float("nan"), float("nan")
            row = [round(time.monotonic() - t0, 1), H.rss_kib(pid), H.fd_count(pid), int(reqs) if reqs == reqs else -1,
                   int(active) if active == active else -1, round(H.cpu_seconds(pid) - cpu0, 2)]
            rows.append(row)
            w.writerow(row)
            f.flush()
            return row

        per_kind = {}
        abort_res = {"counts": {}, "unexpected": {}, "samples": []}

        def merge_wrk(kind, result):
            if kind not in per_kind:
                per_kind[kind] = result
                return
            for key, value in result.items():
                if key == "samples":
                    per_kind[kind]["samples"] = (per_kind[kind].get("samples") or []) + (value or [])
                elif isinstance(value, (int, float)):
                    per_kind[kind][key] = per_kind[kind].get(key, 0) + value

        def merge_aborts(result):
            for part in ("counts", "unexpected"):
                for key, value in result.get(part, {}).items():
                    abort_res[part][key] = abort_res[part].get(key, 0) + value
            abort_res["samples"] += result.get("samples", [])

        def run_load(phase: str, until_requests: int, until_seconds: float) -> bool:
            """One phase of load; False when the soak must stop (a failure was recorded)."""
            env = dict(os.environ)
            wrks = {}
            for kind, c in conns.items():
                if c <= 0:
                    continue
                e = dict(env, SOAK_KIND=kind)
                wrks[kind] = procs.start(f"wrk-{kind}-{phase}", ["wrk", "-t1", f"-c{c}", f"-d{args.max_duration}s",
                                                                  "--timeout", "2s", "-s", str(Path(__file__).parent / "soak.lua"), url],
                                         cpu=load_cpu, env=e)
            aborts = None
            if args.abort_rate > 0:
                aborts = procs.start(f"aborts-{phase}", [sys.executable, __file__, "_aborts", str(proxy.port),
                                                         str(args.abort_rate)], cpu=load_cpu)
            ok = True
            last_print = 0.0
            while True:
                row = sample()
                el = row[0]
                if not proxy.alive():
                    failures.append("the proxy died during the soak")
                    ok = False
                    break
                dead_wrk = [k for k, p in wrks.items() if p.poll() is not None]
                if dead_wrk:
                    failures.append(f"wrk {dead_wrk} exited early")
                    ok = False
                    break
                if (until_requests and row[3] >= until_requests) or (until_seconds and el >= until_seconds) \
                        or el >= args.max_duration - 5:
                    break
                if el - last_print >= 30:
                    last_print = el
                    H.log(f"soak: {phase} {el:6.0f}s {row[3]:>11,} requests  RSS {row[1]:>7} KiB  fds {row[2]:>4}  "
                          f"active {row[4]}  load {H.load_average()}")
                time.sleep(args.sample_every)
            # stop the load: wrk prints its summary on SIGINT
            for p in wrks.values():
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGINT)
            if aborts is not None:
                os.kill(aborts.pid, signal.SIGTERM)
            for kind, p in wrks.items():
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    failures.append(f"wrk {kind} ({phase}) did not stop on SIGINT")
                    continue
                out = (work / f"wrk-{kind}-{phase}.out").read_text()
                line = [ln for ln in out.splitlines() if ln.startswith("{")]
                if not line:
                    failures.append(f"wrk {kind} ({phase}): no summary line: {out[-500:]}")
                    continue
                merge_wrk(kind, json.loads(line[-1]))
            if aborts is not None:
                try:
                    aborts.wait(30)
                    merge_aborts(json.loads((work / f"aborts-{phase}.out").read_text().strip().splitlines()[-1]))
                except Exception as e:
                    failures.append(f"abort client ({phase}): no result ({e!r})")
            return ok

        def settle(phase: str):
            """Idle timeouts (client 5 s, pool 2 s) close what is left; then two pool trim
            intervals pass. Returns (fds, quiet RSS)."""
            settle_deadline = time.monotonic() + args.fd_settle
            while True:
                row = sample()
                if row[2] <= fds_idle or time.monotonic() > settle_deadline:
                    break
                time.sleep(1)
            fds = row[2]
            quiet_until = time.monotonic() + args.quiet
            while time.monotonic() < quiet_until:
                time.sleep(min(args.sample_every, max(0.0, quiet_until - time.monotonic())))
                row = sample()
            H.log(f"soak: after the {phase}: fds {fds}, quiet RSS {row[1]} KiB")
            return fds, row[1]

        warm_requests = int(args.requests * args.warmup) if args.requests else 0
        warm_seconds = args.duration * args.warmup if args.duration else 0
        ok = run_load("warmup", warm_requests, warm_seconds)
        warm_end = time.monotonic() - t0
        fds_warm, rss_quiet_warm = settle("warm-up") if ok else (fds_idle, 0)
        main_start = time.monotonic() - t0
        if ok:
            ok = run_load("main", args.requests, main_start + args.duration * (1 - args.warmup) if args.duration else 0)
        load_end = time.monotonic() - t0
        requests_proxy = max(r[3] for r in rows)
        fds_end, rss_quiet_end = settle("run") if ok else (H.fd_count(pid), H.rss_kib(pid))
        rss_end = rss_quiet_end
        dead_sock.close()

        # figures
        warm_t = warm_end
        after = [r for r in rows if main_start <= r[0] <= load_end]
        rss_after = [r[1] for r in after] or [rss_end]
        rss_warm = rss_after[0]
        rss_range = max(rss_after) - min(rss_after)
        # drift: median of the last tenth of the load minus median of the first tenth after warm-up
        k = max(1, len(after) // 10)
        drift = statistics.median(rss_after[-k:]) - statistics.median(rss_after[:k])
        fds_max = max(r[2] for r in rows)

        unexpected = {}
        ok_total = 0
        for kind, r in per_kind.items():
            ok_total += r["ok"]
            n = r["bad"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
            if n:
                unexpected[kind] = {k: r[k] for k in ("bad", "connect", "read", "write", "timeout") if r[k]}
                if r["samples"]:
                    unexpected[kind]["samples"] = r["samples"]
        for kind, n in abort_res["unexpected"].items():
            unexpected[f"abort:{kind}"] = {"bad": n}
        if abort_res["samples"]:
            unexpected.setdefault("abort:samples", abort_res["samples"])
        aborted = sum(v for k, v in abort_res["counts"].items() if k not in ("waited", "waiting_answered_late_client"))
        total = sum(r["responses"] for r in per_kind.values()) + abort_res["counts"].get("waited", 0)

        rc = procs.stop(proxy.proc, signal.SIGTERM, 15)
        if rc != 0:
            failures.append(f"the proxy exited {rc} on SIGTERM (expected 0)")
        quiet_growth = rss_quiet_end - rss_quiet_warm
        if ok and quiet_growth > args.quiet_growth:
            failures.append(f"quiet RSS grew {quiet_growth} KiB from after the warm-up to after the run "
                            f"(> {args.quiet_growth} KiB)")
        if fds_end > fds_idle:
            failures.append(f"open fds {fds_end} after the load and {args.fd_settle} s of settling > {fds_idle} before it")
        if unexpected:
            failures.append(f"unexpected answers: {json.dumps(unexpected)}")

        lines = [
            f"soak: {total:,} requests answered ({ok_total:,} checked by wrk, {abort_res['counts'].get('waited', 0):,} "
            f"waited slow ones) + {aborted:,} client aborts in {load_end:.0f} s "
            f"({total / max(load_end, 1e-9):,.0f} req/s); proxy counted {requests_proxy:,}",
            "  by kind: " + ", ".join(f"{k} {per_kind[k]['ok']:,}" for k in KINDS if k in per_kind)
            + "; aborts " + ", ".join(f"{k} {v:,}" for k, v in sorted(abort_res["counts"].items())),
            f"  quiet RSS (no load, connections closed, pools trimmed): start {rss_start} KiB, after the warm-up "
            f"({args.warmup:.0%} of the requests, {warm_t:.0f} s) {rss_quiet_warm} KiB, after the run {rss_quiet_end} KiB: "
            f"growth {quiet_growth:+} KiB",
            f"  RSS under load after the warm-up: first {rss_warm} KiB, min {min(rss_after)} max {max(rss_after)} "
            f"(range {rss_range} KiB, drift {drift:+.0f} KiB; follows the load's concurrency)",
            f"  fds: idle {fds_idle}, max during load {fds_max}, after the warm-up {fds_warm}, end {fds_end}",
            f"  proxy CPU {rows[-1][5]:.0f} s; workers {args.workers}; load on CPU {load_cpu if load_cpu is not None else 'any'}",
            f"  unexpected answers: {json.dumps(unexpected) if unexpected else 'none'}",
            f"  criterion: quiet RSS growth <= {args.quiet_growth} KiB; fds back to {fds_idle} within "
            f"{args.fd_settle} s after the load; no unexpected answer; exit 0 on SIGTERM",
            f"  result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}",
        ]
        print("\n".join(lines), flush=True)
        title = (f"outrider soak: {total / 1e6:.2f} M requests + {aborted:,} aborts, {load_end:.0f} s; "
                 f"quiet RSS {rss_quiet_warm} -> {rss_quiet_end} KiB; fds {fds_idle} -> {fds_end}")
        msg = draw(results_csv, png, warm_t, title)
        print(f"  chart: {msg}" if msg else f"  chart: {png}", flush=True)
        md.write_text(
            "# Soak\n\n"
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {H.machine_line()}; "
            f"`{' '.join(args.cmdline)}`\n\n```\n" + "\n".join(lines) + "\n```\n\n"
            f"Samples every {args.sample_every} s: `{results_csv.name}` (t_s, rss_kib, fds, requests counted by the "
            f"proxy, active connections, proxy CPU seconds); chart `{png.name}`.\n")
        return 0 if not failures else 1
    finally:
        procs.stop_all()


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "_slow-app":
        asyncio.run(_slow_app(int(sys.argv[2]), SLOW_DELAY))
        return 0
    if len(sys.argv) >= 2 and sys.argv[1] == "_aborts":
        run_aborts(int(sys.argv[2]), float(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000_000, help="stop once the proxy counted this many (0: no limit)")
    ap.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: no limit)")
    ap.add_argument("--max-duration", type=int, default=7200, help="hard stop (seconds)")
    ap.add_argument("--conns", default=DEFAULT_CONNS, help="wrk connections per kind")
    ap.add_argument("--abort-rate", type=float, default=200, help="client aborts per second (0: none)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample-every", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.1, help="fraction of the requests (or seconds) of the warm-up phase")
    ap.add_argument("--quiet-growth", type=int, default=1024,
                    help="KiB the quiet RSS may grow from after the warm-up to after the run")
    ap.add_argument("--quiet", type=float, default=12.0,
                    help="seconds of quiet after each phase's connections closed (two pool trims)")
    ap.add_argument("--fd-settle", type=int, default=20, help="seconds for fds to come back to idle after the load")
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--proxy-cpu", default="any")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--csv", default=str(H.REPO / "Benchmarks/results/soak.csv"))
    ap.add_argument("--png", default=str(H.REPO / "Benchmarks/results/soak.png"))
    ap.add_argument("--md", default=str(H.REPO / "Benchmarks/results/soak.md"))
    ap.add_argument("--outrider", default=os.environ.get("OUTRIDER_BIN") or str(H.REPO / ".build/release/outrider"))
    args = ap.parse_args()
    args.cmdline = ["scripts/soak.sh", *sys.argv[1:]]
    if not args.requests and not args.duration:
        ap.error("give --requests N or --duration S")
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
