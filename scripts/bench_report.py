#!/usr/bin/env python3
"""Tables (and the chart) of scripts/bench.sh.

    bench_report.py tls  RESULTS.tsv HZ     summary of scripts/bench-tls.sh's raw results
    bench_report.py auth RESULTS.tsv HZ     summary of scripts/bench-auth.sh's raw results
    bench_report.py full --meta META.json [--peers PEERS.out] [--tls-out TLS.out]
                         [--tls TLS.tsv] [--auth AUTH.tsv] --hz HZ --md OUT.md [--png OUT.png]

`full` prints the whole performance table (Markdown) to stdout, writes it with the date,
machine, versions and command line to OUT.md, and draws OUT.png (ratios to nginx per case)
when matplotlib can be imported; otherwise it says that the chart was skipped. Only the
standard library is needed for the tables.

Raw results of bench-tls.sh and bench-auth.sh, one line per measurement, tab-separated:
run row case value p50_us p99_us errors non2xx requests proxy_ticks foreign% note
"""
import argparse
import json
import os
import re
import statistics
import sys

KEYS = "run row case val p50 p99 err non2xx work ticks foreign note".split()
BUSY_PCT = 3          # as peers.sh: a load during which other processes used more is flagged "~"
PEERS = [("haproxy", "HAProxy"), ("h2o", "h2o"), ("caddy", "Caddy")]


def num(x):
    try:
        return float(str(x).replace(",", ""))
    except (TypeError, ValueError):
        return None


def lead_num(s):
    """The leading number of a table cell ("28,123 (27,000-29,000) ~" -> 28123.0)."""
    m = re.match(r"\s*(-?[\d,]+(?:\.\d+)?)", s or "")
    return float(m.group(1).replace(",", "")) if m else None


def fmt_int(v):
    return "{:,.0f}".format(v)


def ratio_str(a, b):
    if a is None or b is None or b <= 0 or a < 0:
        return "-", None
    r = a / b
    return "%.2f" % r, r


# ----------------------------------------------------------- raw TSV (tls, auth) ---

class Raw:
    def __init__(self, path, hz):
        self.hz, self.data, self.notes = hz, {}, []
        if path and os.path.exists(path):
            for line in open(path):
                d = dict(zip(KEYS, line.rstrip("\n").split("\t")))
                if len(d) == len(KEYS):
                    self.data.setdefault((d["row"], d["case"]), []).append(d)

    def has(self, row, case):
        return bool(self.vals(row, case))

    def vals(self, row, case, key="val"):
        return [v for v in (num(d[key]) for d in self.data.get((row, case), [])) if v is not None]

    def med(self, row, case, key="val"):
        v = self.vals(row, case, key)
        return statistics.median(v) if v else None

    def failure(self, row, case):
        ds = self.data.get((row, case), [])
        return ds[0]["note"] if ds and not self.vals(row, case) else None

    def flags(self, row, case, label):
        ds, f = self.data.get((row, case), []), ""
        bad = [d for d in ds if d["err"] not in ("0", "-") or d["non2xx"] not in ("0", "-")]
        if bad:
            f += " !"
            self.notes.append("! %s, %s: errors in %d of %d runs (socket errors: %s; non-2xx: %s)" % (
                label, row, len(bad), len(ds), ",".join(d["err"] for d in bad), ",".join(d["non2xx"] for d in bad)))
        busy = [int(d["foreign"]) for d in ds if d["foreign"].isdigit() and int(d["foreign"]) > BUSY_PCT]
        if busy:
            f += " ~"
            self.notes.append("~ %s, %s: other processes used up to %d%% of a core during %d of %d runs"
                              % (label, row, max(busy), len(busy), len(ds)))
        return f

    def value_cell(self, row, case, label, fmt=fmt_int):
        v = self.vals(row, case)
        if not v:
            return (self.failure(row, case) or "not run"), None
        m = statistics.median(v)
        s = fmt(m)
        if len(v) > 1:
            s += " (%s-%s)" % (fmt(min(v)), fmt(max(v)))
        return s + self.flags(row, case, label), m

    def cpu(self, row, case):
        """Median proxy CPU time per request, microseconds."""
        c = [num(d["ticks"]) / self.hz * 1e6 / num(d["work"]) for d in self.data.get((row, case), [])
             if num(d["ticks"]) is not None and num(d["work"])]
        return statistics.median(c) if c else None

    def lat(self, row, case):
        a, b = self.med(row, case, "p50"), self.med(row, case, "p99")
        return (a / 1000, b / 1000) if a is not None and b is not None else None

    def idle_base_mib(self, row, case):
        ds = self.data.get((row, case))
        if not ds:
            return None
        kv = dict(x.split("=", 1) for x in ds[0]["note"].split(",") if "=" in x)
        return int(kv["base_kb"]) / 1024 if kv.get("base_kb", "").isdigit() else None

    def idle_check(self, row, case, label):
        ds = self.data.get((row, case))
        if not ds:
            return ""
        d = ds[0]
        kv = dict(x.split("=", 1) for x in d["note"].split(",") if "=" in x)
        held, opened = int(num(d["work"]) or 0), int(kv.get("open", 0) or 0)
        if d["err"] != "0" or opened < held:
            self.notes.append("! %s, %s: %d connections held, %s failed, %d established at the proxy"
                              % (label, row, held, d["err"], opened))
            return " !"
        return ""


# --------------------------------------------------------------- peers.sh output ---

PEER_HEAD = ["proxy", "(a) keep-alive req/s", "x nginx", "p50/p99 ms", "CPU us/req",
             "(b) conn-close req/s", "x nginx", "p50/p99 ms", "CPU us/req",
             "(c) 1 MiB MB/s", "x nginx", "CPU us/MB",
             "(d) h2c req/s", "x nginx", "CPU us/req", "(e) B/idle conn", "RSS MiB"]


def parse_peers(path):
    """peers.sh's stdout -> (header lines, {row: cells}, note lines)."""
    head, rows, notes, in_table, after = [], {}, [], False, False
    if not path:
        return head, rows, notes
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if line.startswith("| proxy"):
            cols = [c.strip() for c in line.strip().strip("|").split("|")]
            if cols != PEER_HEAD:
                sys.stderr.write("bench_report: peers.sh's table has other columns than expected: %s\n" % cols)
            in_table = True
            continue
        if in_table and line.startswith("|"):
            if set(line) <= set("|- "):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
            continue
        if in_table and not line.startswith("|"):
            in_table, after = False, True
        if after and line[:2] in ("! ", "~ "):
            notes.append(line)
        elif not after and line and not line.startswith("|"):
            head.append(line)
    return head, rows, notes


# ------------------------------------------------------------------- the tables ---

class Metric:
    """One line of the table: a case, a figure, which way is better, and one cell per column."""

    def __init__(self, case, figure, better, cells, ratio, peers=None, chart=None, direct="-"):
        self.case, self.figure, self.better = case, figure, better
        self.cells = cells            # {"outrider": str, "nginx": str}
        self.ratio = ratio            # (text, number or None)
        self.peers = peers or {}      # {peer: (text, ratio number or None)}
        self.chart = chart            # short label for the chart, or None
        self.direct = direct


def peers_metrics(rows, peers_present):
    o, n = rows.get("project"), rows.get("nginx")
    if not o or not n:
        return []
    out = []

    def cell(row, i):
        r = rows.get(row)
        return r[i] if r and i < len(r) else "-"

    def lat_ratio(i):
        a, b = cell("project", i), cell("nginx", i)
        pa, pb = re.findall(r"[\d.]+", a), re.findall(r"[\d.]+", b)
        if len(pa) == 2 and len(pb) == 2 and float(pb[0]) > 0 and float(pb[1]) > 0:
            return ("%.2f / %.2f" % (float(pa[0]) / float(pb[0]), float(pa[1]) / float(pb[1])), None)
        return ("-", None)

    def simple(case, figure, better, i, chart, nginx_is_ratio_base=True, outrider_na=None):
        ov = cell("project", i)
        if outrider_na and lead_num(ov) is None:
            ov = outrider_na
        rt = ratio_str(lead_num(cell("project", i)), lead_num(cell("nginx", i)))
        pe = {}
        for p, _ in peers_present:
            pv = cell(p, i)
            r = ratio_str(lead_num(pv), lead_num(cell("nginx", i)))
            pe[p] = (pv + (" (%s)" % r[0] if r[1] is not None else ""), r[1])
        d = cell("direct", i) if "direct" in rows else "-"
        out.append(Metric(case, figure, better, {"outrider": ov, "nginx": cell("nginx", i)}, rt, pe, chart, d))

    def lat_line(case, i):
        pe = {p: (cell(p, i), None) for p, _ in peers_present}
        out.append(Metric(case, "p50 / p99 ms", "lower", {"outrider": cell("project", i), "nginx": cell("nginx", i)},
                          lat_ratio(i), pe, None, cell("direct", i) if "direct" in rows else "-"))

    a = "(a) keep-alive small GET (wrk -t1 -c50)"
    simple(a, "req/s", "higher", 1, "(a) keep-alive req/s")
    simple(a, "proxy CPU µs/req", "lower", 4, "(a) keep-alive CPU/req")
    lat_line(a, 3)
    b = "(b) new connection per request (wrk -t1 -c50, Connection: close)"
    simple(b, "req/s", "higher", 5, "(b) conn-close req/s")
    simple(b, "proxy CPU µs/req", "lower", 8, "(b) conn-close CPU/req")
    lat_line(b, 7)
    c = "(c) 1 MiB responses (wrk -t1 -c8)"
    simple(c, "MB/s", "higher", 9, "(c) 1 MiB MB/s")
    simple(c, "proxy CPU µs/MB", "lower", 11, "(c) 1 MiB CPU/MB")
    d = "(d) h2c, prior knowledge (h2load -t1 -c10 -m10)"
    simple(d, "req/s", "higher", 12, "(d) h2c req/s")
    simple(d, "proxy CPU µs/req", "lower", 14, "(d) h2c CPU/req")
    e = "(e) idle keep-alive connections"
    simple(e, "bytes per idle connection", "lower", 15, "(e) bytes/idle conn")
    simple(e, "RSS before, MiB", "lower", 16, None)
    return out


def raw_metrics(raw, specs, rows=("outrider", "nginx")):
    """specs: (case, case key, kind, chart label); kind: rps | cpu | lat | idle | rss."""
    out = []
    o_row, n_row = rows
    for case, key, kind, chart in specs:
        if not (raw.data.get((o_row, key)) or raw.data.get((n_row, key))):
            continue
        label = "%s [%s]" % (case.split(" (")[0], key)
        if kind == "rps":
            (oc, ov), (nc, nv) = raw.value_cell(o_row, key, label), raw.value_cell(n_row, key, label)
            out.append(Metric(case, "req/s", "higher", {"outrider": oc, "nginx": nc}, ratio_str(ov, nv), chart=chart))
        elif kind == "cpu":
            ov, nv = raw.cpu(o_row, key), raw.cpu(n_row, key)
            f = lambda v: "%.1f" % v if v is not None else "-"
            out.append(Metric(case, "proxy CPU µs/req", "lower", {"outrider": f(ov), "nginx": f(nv)},
                              ratio_str(ov, nv), chart=chart))
        elif kind == "lat":
            ol, nl = raw.lat(o_row, key), raw.lat(n_row, key)
            f = lambda v: "%.2f / %.2f" % v if v else "-"
            r = ("%.2f / %.2f" % (ol[0] / nl[0], ol[1] / nl[1])) if ol and nl and nl[0] > 0 and nl[1] > 0 else "-"
            out.append(Metric(case, "p50 / p99 ms", "lower", {"outrider": f(ol), "nginx": f(nl)}, (r, None)))
        elif kind == "idle":
            (oc, ov), (nc, nv) = raw.value_cell(o_row, key, label), raw.value_cell(n_row, key, label)
            oc += raw.idle_check(o_row, key, label)
            nc += raw.idle_check(n_row, key, label)
            out.append(Metric(case, "bytes per idle connection", "lower", {"outrider": oc, "nginx": nc},
                              ratio_str(ov, nv), chart=chart))
        elif kind == "rss":
            ov, nv = raw.idle_base_mib(o_row, key), raw.idle_base_mib(n_row, key)
            f = lambda v: "%.1f" % v if v is not None else "-"
            out.append(Metric(case, "RSS before, MiB", "lower", {"outrider": f(ov), "nginx": f(nv)}, ratio_str(ov, nv)))
    return out


def tls_specs(raw):
    ka = "TLS keep-alive small GET (wrk -t1 -c50, https)"
    ob = "TLS keep-alive small GET (outrider-bench -t1 -c50 --insecure)"
    cl = "TLS new connection per request, mostly resumed sessions (wrk -t1 -c50, Connection: close)"
    clo = "TLS new connection per request, full handshakes (outrider-bench -t1 -c50, Connection: close)"
    n = ""
    for d in raw.data.get(("outrider", "tls-idle"), []) + raw.data.get(("nginx", "tls-idle"), []):
        n = "%d " % int(num(d["work"]) or 0) if num(d["work"]) else n
    idle = "TLS idle keep-alive connections (%sheld, one GET each)" % n
    return [(ka, "tls-ka", "rps", "TLS keep-alive req/s (wrk)"), (ka, "tls-ka", "cpu", "TLS keep-alive CPU/req (wrk)"),
            (ka, "tls-ka", "lat", None),
            (ob, "tls-ka-ob", "rps", "TLS keep-alive req/s (outrider-bench)"),
            (ob, "tls-ka-ob", "cpu", "TLS keep-alive CPU/req (outrider-bench)"), (ob, "tls-ka-ob", "lat", None),
            (cl, "tls-close", "rps", "TLS conn-close req/s (wrk, resumed)"),
            (cl, "tls-close", "cpu", "TLS conn-close CPU/req (wrk, resumed)"),
            (cl, "tls-close", "lat", None),
            (clo, "tls-close-ob", "rps", "TLS conn-close req/s (outrider-bench, full handshakes)"),
            (clo, "tls-close-ob", "cpu", "TLS conn-close CPU/req (outrider-bench, full handshakes)"),
            (clo, "tls-close-ob", "lat", None),
            (idle, "tls-idle", "idle", "TLS bytes/idle conn"), (idle, "tls-idle", "rss", None)]


def auth_specs():
    a = "auth'd route (Outrider: API-key filter; nginx: plain proxy; wrk -t1 -c50)"
    return [(a, "auth", "rps", "auth'd route req/s"), (a, "auth", "cpu", "auth'd route CPU/req"), (a, "auth", "lat", None)]


def markdown(metrics, peers_present, with_direct):
    head = ["case", "figure", "Outrider", "nginx", "**Outrider ÷ nginx**"]
    head += ["%s (÷ nginx)" % name for _, name in peers_present]
    if with_direct:
        head.append("no proxy (app direct)")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    last = None
    for m in metrics:
        arrow = {"higher": " ↑", "lower": " ↓"}.get(m.better, "")
        r = m.ratio[0]
        row = [m.case if m.case != last else "", m.figure + arrow, m.cells["outrider"], m.cells["nginx"],
               "**%s**" % r if r != "-" else r]
        row += [m.peers.get(p, ("-", None))[0] for p, _ in peers_present]
        if with_direct:
            row.append(m.direct)
        last = m.case
        lines.append("| " + " | ".join(x.replace("|", "/") for x in row) + " |")
    return "\n".join(lines)


LEGEND = """↑ higher is better (throughput), ↓ lower is better (CPU, latency, memory). Outrider ÷ nginx is
the ratio of the two medians measured in this one invocation (for p50 / p99: each ratio);
peers' cells show their figure and, in parentheses, its ratio to nginx. Proxy CPU µs is the user +
system time of all the proxy's processes (/proc/PID/stat) over the load, divided by the requests
it answered (per MB for 1 MiB). Bytes per idle connection: RSS growth of the proxy's processes
divided by the connections held. `!` errors or non-2xx answers, `~` other processes used more
than 3% of a core during the load (see the notes)."""


# --------------------------------------------------------------------- the chart ---

def chart(metrics, peers_present, png, title, subtitle):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, NullLocator
    except Exception as e:  # noqa: BLE001 - any import failure means no chart
        return "chart skipped: matplotlib is not available (%s)" % e.__class__.__name__
    groups = [("higher", "Throughput ÷ nginx — HIGHER is better ▶"),
              ("lower", "Cost ÷ nginx (CPU, memory) — LOWER is better ◀")]
    series = [("outrider", "Outrider", "#1f5fa8")] + [
        (p, name, c) for (p, name), c in zip(peers_present, ["#e3a33b", "#8cb369", "#b07aa1"])]
    panels = []
    for better, ptitle in groups:
        ms = [m for m in metrics if m.chart and m.better == better]
        if ms:
            panels.append((better, ptitle, ms))
    if not panels:
        return "chart skipped: no ratio to draw"
    heights = [len(ms) * (0.25 + 0.22 * len(series)) + 1.2 for _, _, ms in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, sum(heights) + 1.8),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    allr = [r for _, _, ms in panels for m in ms for r in [m.ratio[1]] + [v[1] for v in m.peers.values()] if r]
    lo = min([0.5] + allr) / 1.25
    hi = max([2.0] + allr) * 1.25
    ticks = [t for t in (0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 10, 20) if lo <= t <= hi]
    for ax, (better, ptitle, ms) in zip(axes[:, 0], panels):
        bh = 0.8 / len(series)
        for k, m in enumerate(ms):
            y0 = len(ms) - 1 - k
            for j, (key, name, color) in enumerate(series):
                y = y0 + 0.4 - bh * (j + 0.5)
                r = m.ratio[1] if key == "outrider" else m.peers.get(key, ("-", None))[1]
                if r is None or r <= 0:
                    if key == "outrider":
                        why = m.cells["outrider"] if lead_num(m.cells["outrider"]) is None else \
                            "%s, nginx %s: no ratio" % (m.cells["outrider"], m.cells["nginx"])
                        ax.text(1.0, y, "  Outrider: %s" % why, va="center", fontsize=8, color=color)
                    continue
                ax.barh(y, r - 1, left=1, height=bh * 0.9, color=color, label=name if k == 0 else None,
                        alpha=1.0 if key == "outrider" else 0.75)
                if key == "outrider":
                    good = (r >= 1) if better == "higher" else (r <= 1)
                    tint = "#555555" if abs(r - 1) < 0.02 else "#1a7f37" if good else "#b42318"
                    ax.text(r * (1.03 if r >= 1 else 1 / 1.03), y, "%.2f×" % r, va="center",
                            ha="left" if r >= 1 else "right", fontsize=8, fontweight="bold", color=tint)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels(["%g×" % t for t in ticks])
        ax.axvline(1, color="black", linewidth=1.2)
        ax.text(1, len(ms) - 0.45, " nginx = 1", fontsize=8, va="bottom")
        ax.set_yticks([len(ms) - 1 - k for k in range(len(ms))])
        ax.set_yticklabels([m.chart for m in ms], fontsize=9)
        ax.set_ylim(-0.6, len(ms) - 0.2)
        ax.set_title(ptitle, fontsize=10, loc="left", fontweight="bold")
        ax.grid(axis="x", linestyle=":", alpha=0.6)
        # shade the better side
        if better == "higher":
            ax.axvspan(1, hi, color="#1a7f37", alpha=0.05)
        else:
            ax.axvspan(lo, 1, color="#1a7f37", alpha=0.05)
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.suptitle(title, fontsize=12, fontweight="bold", x=0.01, ha="left")
    fig.text(0.01, 0.005, subtitle, fontsize=7.5, ha="left", va="bottom", color="#444")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(png, dpi=110)
    return "chart: %s" % png


# ----------------------------------------------------------------------- commands ---

def cmd_small(kind, path, hz):
    raw = Raw(path, hz)
    if kind == "tls":
        ms = raw_metrics(raw, tls_specs(raw))
        title = "TLS termination, Outrider vs nginx"
    else:
        ms = raw_metrics(raw, auth_specs())
        title = "auth'd route: Outrider (API key) vs nginx (plain proxy)"
    print(title)
    print(markdown(ms, [], False))
    for n in raw.notes:
        print(n)


def cmd_full(a):
    meta = json.load(open(a.meta))
    phead, prows, pnotes = parse_peers(a.peers)
    tls_raw, auth_raw = Raw(a.tls, a.hz), Raw(a.auth, a.hz)
    peers_present = [(p, name) for p, name in PEERS if p in prows]
    metrics = peers_metrics(prows, peers_present)
    metrics += raw_metrics(tls_raw, tls_specs(tls_raw))
    metrics += raw_metrics(auth_raw, auth_specs())
    with_direct = "direct" in prows
    table = markdown(metrics, peers_present, with_direct)

    tls_head = []
    if a.tls_out:
        tls_head = [l.rstrip("\n") for l in open(a.tls_out, errors="replace")
                    if re.match(r"(tls \(|cert:|settings:)", l)]
    notes = [re.sub(r"^([!~] )project ", r"\1Outrider ", n) for n in pnotes] + tls_raw.notes + auth_raw.notes
    skipped = meta.get("skipped", [])
    missing = [x for x, ok in (("peers.sh (cases a-e)", bool(prows.get("project"))), ("TLS", bool(tls_raw.data)),
                               ("auth'd route", bool(auth_raw.data))) if not ok and x not in skipped]

    md = ["# Outrider performance, side by side", ""]
    md.append("Generated by `scripts/bench.sh` on %s. **Every figure comes from this one invocation**: "
              "compare the ratios (Outrider ÷ nginx measured in the same run), not absolute numbers "
              "across machines or runs." % meta["date"])
    md.append("")
    md.append("- command: `%s`" % meta["command"])
    md.append("- machine: %s" % meta["machine"])
    md.append("- versions: %s" % meta["versions"])
    for l in phead:
        l = re.sub(r"\s+", " ", l).strip()
        if l.startswith("pinning:"):
            md.append("- " + l)
        elif l.startswith("settings:"):
            md.append("- settings of (a)-(e) (peers.sh): " + l[len("settings:"):].strip())
        elif l.startswith("other processes"):
            md.append("- " + l)
        elif l.startswith("WARNING"):
            md.append("- **peers.sh: %s**" % l)
    for l in tls_head:
        l = re.sub(r"\s+", " ", l).strip()
        if l.startswith("tls ("):
            md.append("- TLS handshake with %s" % l[len("tls ("):].replace("):", ":", 1))
        elif l.startswith("cert:"):
            md.append("- TLS certificate: " + l[len("cert:"):].strip())
        elif l.startswith("settings:"):
            md.append("- settings of the TLS cases: " + l[len("settings:"):].strip())
    if meta.get("extra"):
        for l in meta["extra"]:
            md.append("- %s" % l)
    md += ["", table, "", LEGEND, ""]
    md.append("Setup: proxy pinned to CPU 0 (1 worker / thread each), the app (nginx, 1 worker, "
              "`return 200`, small body; a 1 MiB static file for (c)) and the load generator on CPU 1. "
              "Cases (a)-(e): `../shared/bench/peers.sh` with Outrider as its \"project\" row "
              "(`Benchmarks/peers-sidecar.yaml`). TLS: `scripts/bench-tls.sh` (both proxies terminate TLS "
              "with `config/examples/tls/server.crt`, EC P-256, TLS 1.2-1.3 offered; wrk resumes TLS sessions, so "
              "its new connections are mostly resumed handshakes; outrider-bench never resumes: full handshakes). Auth'd route: `scripts/bench-auth.sh` "
              "(`Benchmarks/auth-sidecar.yaml`: Outrider checks an `x-api-key`; nginx only proxies).")
    if skipped:
        md += ["", "Skipped in this run (TLS_CASE=0 / AUTH_CASE=0): " + ", ".join(skipped) + "."]
    if missing:
        md += ["", "**Not measured in this run (failed; see latest.log):** " + ", ".join(missing) + "."]
    if notes:
        md += ["", "Notes:", ""] + ["- `%s`%s" % (n[:1], n[1:]) for n in notes]
    msg = "chart skipped: no --png given"
    if a.png:
        title = "Outrider ÷ nginx, same run — %s" % meta["date"]
        sub = ("%s\n%s\nRatios to nginx measured in the same invocation (log scale; 1 = nginx); "
               "figures and setup: Benchmarks/results/latest.md" % (meta["machine"], meta["command"]))
        msg = chart(metrics, peers_present, a.png, title, sub)
        if msg.startswith("chart:"):
            md += ["", "![Outrider ÷ nginx per case](%s)" % a.png.split("/")[-1]]
        else:
            md += ["", "(%s)" % msg]
    open(a.md, "w").write("\n".join(md) + "\n")
    print(table)
    print()
    print(LEGEND)
    for n in notes:
        print(n)
    if skipped:
        print("skipped in this run: " + ", ".join(skipped))
    if missing:
        print("not measured in this run (failed): " + ", ".join(missing))
    print()
    print("table: %s" % a.md)
    print(msg)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] in ("tls", "auth"):
        if len(sys.argv) != 4:
            sys.exit(__doc__)
        cmd_small(sys.argv[1], sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("cmd", choices=["full"])
    ap.add_argument("--meta", required=True)
    ap.add_argument("--peers")
    ap.add_argument("--tls-out")
    ap.add_argument("--tls")
    ap.add_argument("--auth")
    ap.add_argument("--hz", type=int, required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--png")
    cmd_full(ap.parse_args())


if __name__ == "__main__":
    main()
