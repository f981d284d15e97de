#!/usr/bin/env python3
"""Turns bench/run's raw measurements (one JSON object per line) into results.md/results.json.

  report.py line RAW             one progress line for the last measurement in RAW
  report.py report RAW --out DIR ...   medians, targets, correctness; exit 1 if a check failed

Standard library only.
"""

import argparse
import datetime
import json
import statistics
import sys

LABELS = {
    "nginx": "nginx, constant body (HTTP ceiling)",
    "tally-memory": "tally, memory store",
    "tally-redis-before": "tally, Redis (async), before (TALLY_BEFORE_BIN)",
    "tally-redis": "tally, Redis (async)",
    "tally-sentinel": "tally, Sentinel (replicated: WAIT 1)",
    "tally-cluster-1": "tally, Redis Cluster of 1 master (async)",
    "tally-cluster-3": "tally, Redis Cluster of 3 masters (async)",
    "webdis": "webdis, INCR",
    "node": "Node.js: fastify + ioredis, 2 workers",
    "tally-redis-2t": "tally, Redis (async), 2 worker threads",
    "tally-redis-infolog": "tally, Redis (async), RUST_LOG=info",
    "redis-incr": "redis-benchmark -t incr",
    "redis-incr-P16": "redis-benchmark -t incr -P 16",
}
ORDER = list(LABELS)
WORKLOADS = {
    "hot": "One hot id",
    "uniform": "Ids uniform over 1,000,000",
    "zipf": "Zipf-like ids (s = 0.9 over 1,000,000: 1 % of the ids take 50.7 % of the requests)",
}
PEERS = ["webdis", "node"]
TALLY = ["tally-memory", "tally-redis-before", "tally-redis", "tally-sentinel", "tally-cluster-1", "tally-cluster-3",
         "tally-redis-2t", "tally-redis-infolog"]
RSS_LIMIT_MB = 32


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def derive(rec):
    """Adds the derived figures and the counter check to one record (in place)."""
    if rec["kind"] == "wrk":
        w = rec["wrk"]
        e = w["errors"]
        secs = w["duration_us"] / 1e6
        ok = w["requests"] - e["status"]
        rec["ok"] = ok
        rec["non2xx"] = e["status"]
        rec["socket_errors"] = e["connect"] + e["read"] + e["write"] + e["timeout"]
        rec["rps"] = ok / secs if secs else 0.0
        rec["p50_ms"] = w["latency_us"]["p50"] / 1000
        rec["p99_ms"] = w["latency_us"]["p99"] / 1000
        per = 1e4 / ok if ok else float("nan")
        rec["server_cpu_per_10k"] = rec["server_cpu_s"] * per
        rec["redis_cpu_per_10k"] = rec["redis_cpu_s"] * per
        rec["load_cpu_per_10k"] = rec["load_cpu_s"] * per
        rec["rss_peak_mb"] = rec["rss_peak_kb"] / 1024
        rec.setdefault("workload", "hot")
        if rec.get("redis_reads") and ok:
            rec["redis_reads_per_req"] = rec["redis_reads"] / ok
            rec["redis_writes_per_req"] = rec["redis_writes"] / ok
        if rec["target"] == "nginx" or rec.get("counter") is None:
            rec["check"] = None
        else:
            # Every 2xx is one increment. A request that wrk did not see answered (in flight at the
            # end: at most one per connection; a socket error or timeout; a non-2xx, which can be
            # ambiguous) may or may not have incremented.
            lo = ok
            hi = ok + rec["conc"] + rec["socket_errors"] + rec["non2xx"]
            rec["check"] = {"low": lo, "high": hi, "counter": rec["counter"],
                            "ok": ok > 0 and lo <= rec["counter"] <= hi}
    elif rec["kind"] == "redis-benchmark":
        rec["workload"] = "hot"
        f = rec["csv"].split(",")
        rec["rps"] = float(f[1])
        rec["p50_ms"] = float(f[4])
        rec["p99_ms"] = float(f[6])
        rec["redis_cpu_per_10k"] = rec["redis_cpu_s"] * 1e4 / rec["requests"]
        rec["load_cpu_per_10k"] = rec["load_cpu_s"] * 1e4 / rec["requests"]
    return rec


def fmt(v, digits=2):
    if v is None or v != v:
        return "–"
    return f"{v:.{digits}f}"


def kreq(v):
    return "–" if v is None else f"{v / 1000:.1f}k"


def line(path):
    rec = derive(load(path)[-1])
    name = f"[r{rec['round']} c={rec['conc']} {rec['workload']:<7}] {rec['target']:<20}"
    if rec["kind"] == "redis-benchmark":
        print(f"{name} {rec['rps']:>9.0f} req/s  p99 {rec['p99_ms']:.2f} ms  "
              f"Redis CPU/10k {rec['redis_cpu_per_10k']:.3f} s  (-P {rec['pipeline']})")
        return 0
    check = rec["check"]
    verdict = "n/a" if check is None else (
        f"{'ok' if check['ok'] else 'WRONG'} ({check['counter']} in [{check['low']}, {check['high']}])")
    extra = f"  non-2xx {rec['non2xx']}" if rec["non2xx"] else ""
    extra += f"  socket errors {rec['socket_errors']}" if rec["socket_errors"] else ""
    print(f"{name} {rec['rps']:>9.0f} req/s  p50 {rec['p50_ms']:.2f} ms  p99 {rec['p99_ms']:.2f} ms  "
          f"CPU/10k {rec['server_cpu_per_10k']:.3f} s  Redis/10k {rec['redis_cpu_per_10k']:.3f} s  "
          f"RSS {rec['rss_peak_mb']:.1f} MB  count {verdict}{extra}"
          + (f"  Redis reads/writes per req {rec['redis_reads_per_req']:.3f}/"
             f"{rec['redis_writes_per_req']:.3f}" if "redis_reads_per_req" in rec else ""))
    return 0


def median(values):
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else None


def summarise(records, workload):
    """Medians over rounds per (target, concurrency) of one workload; RSS is the maximum."""
    groups = {}
    for r in records:
        if r["kind"] in ("wrk", "redis-benchmark") and r["workload"] == workload:
            groups.setdefault((r["target"], r["conc"]), []).append(r)
    out = {}
    for (target, conc), rs in groups.items():
        s = {"rounds": len(rs)}
        for key in ("rps", "p50_ms", "p99_ms", "server_cpu_per_10k", "redis_cpu_per_10k",
                    "load_cpu_per_10k", "redis_reads_per_req", "redis_writes_per_req"):
            if key in rs[0]:
                s[key] = median([r[key] for r in rs])
        s["rps_best"] = max(r["rps"] for r in rs)
        if rs[0]["kind"] == "wrk":
            s["rss_peak_mb"] = max(r["rss_peak_mb"] for r in rs)
            s["non2xx"] = sum(r["non2xx"] for r in rs)
            s["socket_errors"] = sum(r["socket_errors"] for r in rs)
            checks = [r["check"] for r in rs if r["check"] is not None]
            s["counter_checks"] = len(checks)
            s["counter_checks_passed"] = sum(c["ok"] for c in checks)
        else:
            s["pipeline"] = rs[0]["pipeline"]
        out.setdefault(target, {})[conc] = s
    return out


def evaluate(summary, concs, records, workload):
    """The targets of issue 19 on one workload, as ratios of this run's medians, with the same
    ratio within each round beside it (a round's targets run within a minute or two of each
    other, so the per-round ratios show how much of a verdict is noise)."""
    targets = []
    by_round = {}
    for r in records:
        if r["kind"] == "wrk" and r["workload"] == workload:
            by_round.setdefault(r["round"], {})[(r["target"], r["conc"])] = r

    def get(t, c, k):
        return summary.get(t, {}).get(c, {}).get(k)

    def rounds(c, a, b, key):
        """a's key ÷ b's key within each round."""
        out = []
        for _, rs in sorted(by_round.items()):
            x, y = rs.get((a, c), {}).get(key), rs.get((b, c), {}).get(key)
            if x and y:
                out.append(x / y)
        return out

    def add(name, conc, value, need, op, detail, per_round=()):
        met = None if value is None else (value >= need if op == ">=" else value <= need)
        targets.append({"workload": workload, "target": name, "conc": conc, "value": value,
                        "need": f"{op} {need}", "met": met, "detail": detail,
                        "per_round": list(per_round)})

    def ratio(name, c, a, b, key, need, op, unit):
        x, y = get(a, c, key), get(b, c, key)
        if x and y:
            add(name, c, x / y, need, op, f"{x:{unit}} vs {y:{unit}}", rounds(c, a, b, key))

    for c in concs:
        ratio("tally on Redis ≥ 0.85× tally on the memory store", c, "tally-redis",
              "tally-memory", "rps", 0.85, ">=", ".0f")
        ratio("tally on Redis ≥ 1.2× webdis", c, "tally-redis", "webdis", "rps", 1.2, ">=", ".0f")
        ratio("tally on Redis p99 ≤ webdis's p99", c, "tally-redis", "webdis", "p99_ms", 1.0,
              "<=", ".2f")
        ratio("tally on Redis server CPU per request ≤ 1.6× nginx's constant", c, "tally-redis",
              "nginx", "server_cpu_per_10k", 1.6, "<=", ".3f")
        ratio("replicated durability ≥ 0.5× async", c, "tally-sentinel", "tally-redis", "rps",
              0.5, ">=", ".0f")
    if workload == "hot":
        # Not the memory store: its RSS is its data (the million counters of the many-id
        # workloads, once they ran).
        for t in (t for t in TALLY if t != "tally-memory"):
            rss = [s["rss_peak_mb"] for s in summary.get(t, {}).values() if "rss_peak_mb" in s]
            if rss:
                add(f"RSS ≤ {RSS_LIMIT_MB} MB under load ({t})", None, max(rss), RSS_LIMIT_MB,
                    "<=", f"peak {max(rss):.1f} MB")
    return targets


def other_ratios(summary, concs):
    out = []

    def get(t, c, k):
        return summary.get(t, {}).get(c, {}).get(k)

    for c in concs:
        for a, b, what in [
            ("tally-memory", "nginx", "tally (memory store) / nginx constant"),
            ("tally-redis", "nginx", "tally (Redis) / nginx constant"),
            ("tally-redis", "redis-incr", "tally (Redis) / redis-benchmark INCR unpipelined"),
            ("tally-redis-infolog", "tally-redis", "tally with RUST_LOG=info / RUST_LOG=warn"),
            ("tally-redis-2t", "tally-redis", "tally with 2 worker threads / 1"),
        ]:
            x, y = get(a, c, "rps"), get(b, c, "rps")
            if x and y:
                out.append({"ratio": what, "conc": c, "value": x / y})
        for a, what in [("tally-redis-infolog", "RUST_LOG=info / RUST_LOG=warn"),
                        ("tally-redis-2t", "2 worker threads / 1")]:
            x, y = get(a, c, "server_cpu_per_10k"), get("tally-redis", c, "server_cpu_per_10k")
            if x and y:
                out.append({"ratio": f"tally CPU/10k with {what}", "conc": c, "value": x / y})
    return out


def markdown(args, summaries, workloads, targets, ratios, records, failures, concs):
    rounds = args.rounds
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run{' --quick' if args.quick else ''}` on "
        f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"{args.tally} built from {args.commit}.",
        "",
        f"**Machine:** {args.machine}. Load average (1, 5, 15 min) before / after the run: "
        f"{args.load} (this machine is shared: a 1-minute load well above 0 before the run means "
        "other work was competing for the cores, which adds noise to every row alike)"
        + (f"; every process of the run had nice {args.nice}, to take the cores first." if args.nice
           else "."),
        "",
        f"wrk -t2 on loopback, {args.warmup} s warm-up then {args.duration} s per target; "
        f"{rounds} interleaved round{'s' if rounds != 1 else ''}, medians (best round: the highest "
        "req/s of any round; peak RSS: maximum). "
        "req/s counts 2xx answers only. CPU is utime+stime of every process of the server "
        "(`/proc/PID/stat`), per 10,000 answered requests; wrk's own CPU is shown because it "
        "shares the 2 cores. Absolute figures drift between days and machines: compare ratios "
        "within this run. How to read it: bench/README.md.",
        "",
    ]
    for w in workloads:
        for c in concs:
            if not any(c in per for per in summaries[w].values()):
                continue
            lines += [f"## {WORKLOADS[w]}, c={c}", "",
                      "| target | req/s | best round | p50 ms | p99 ms | server CPU s/10k "
                      "| Redis CPU s/10k | wrk CPU s/10k | Redis reads / writes per request "
                      "| peak RSS MB | counter check |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
            for t in ORDER:
                s = summaries[w].get(t, {}).get(c)
                if not s or "rss_peak_mb" not in s:
                    continue
                if s["counter_checks"]:
                    check = f"{s['counter_checks_passed']}/{s['counter_checks']} ok"
                else:
                    check = "n/a (constant)"
                if s["non2xx"] or s["socket_errors"]:
                    check += f"; {s['non2xx']} non-2xx, {s['socket_errors']} socket errors"
                events = "–"
                if s.get("redis_reads_per_req") is not None:
                    events = f"{s['redis_reads_per_req']:.3f} / {s['redis_writes_per_req']:.3f}"
                lines.append(
                    f"| {LABELS[t]} | {kreq(s['rps'])} | {kreq(s['rps_best'])} "
                    f"| {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} "
                    f"| {fmt(s['server_cpu_per_10k'], 3)} | {fmt(s['redis_cpu_per_10k'], 3)} "
                    f"| {fmt(s['load_cpu_per_10k'], 3)} | {events} | {fmt(s['rss_peak_mb'], 1)} "
                    f"| {check} |")
            lines.append("")
    summary = summaries.get("hot", {})
    lines += ["## Redis ceilings (redis-benchmark on the same Redis)", "",
              "| run | c | req/s | p50 ms | p99 ms | Redis CPU s/10k | redis-benchmark CPU s/10k |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for t in ("redis-incr", "redis-incr-P16"):
        for c, s in sorted(summary.get(t, {}).items()):
            lines.append(f"| {LABELS[t]} | {c} | {kreq(s['rps'])} | {fmt(s['p50_ms'])} "
                         f"| {fmt(s['p99_ms'])} | {fmt(s['redis_cpu_per_10k'], 3)} "
                         f"| {fmt(s['load_cpu_per_10k'], 3)} |")
    lines += ["", "## Targets (issue 19)", "",
              "Ratios of the medians decide; the same ratio within each round is shown beside it.",
              "",
              "| workload | target | c | this run (medians) | per round | needed | met |",
              "|---|---|---:|---:|---:|---:|---|"]
    for t in targets:
        met = {True: "**met**", False: "not met", None: "–"}[t["met"]]
        per_round = " / ".join(fmt(v) for v in t["per_round"]) or "–"
        lines.append(f"| {t['workload']} | {t['target']} | {t['conc'] or 'all'} | {fmt(t['value'])} "
                     f"({t['detail']}) | {per_round} | {t['need']} | {met} |")
    if ratios:
        lines += ["", "## Other ratios", "", "| ratio | c | value |", "|---|---:|---:|"]
        for r in ratios:
            lines.append(f"| {r['ratio']} | {r['conc']} | {fmt(r['value'])} |")
    checks = [r for r in records if r["kind"] == "wrk" and r["check"] is not None]
    sanity = [r for r in records if r["kind"] == "sanity"]
    lines += ["", "## Correctness", ""]
    lines.append(
        f"{sum(r['check']['ok'] for r in checks)} of {len(checks)} counter checks passed (after "
        "each run the counter must lie between the 2xx answers and the 2xx answers plus the "
        "requests that may have run unanswered: one in flight per connection, socket errors, "
        f"non-2xx); {sum(r['ok'] for r in sanity)} of {len(sanity)} targets counted up by one on "
        "two GETs.")
    for f in failures:
        lines.append(f"- **FAILED**: {f}")
    lines.append("")
    return "\n".join(lines)


def report(args):
    records = [derive(r) for r in load(args.raw)]
    concs = sorted({r["conc"] for r in records if r["kind"] == "wrk"})
    workloads = [w for w in WORKLOADS if any(r.get("workload") == w for r in records)]
    summaries = {w: summarise(records, w) for w in workloads}
    targets = [t for w in workloads for t in evaluate(summaries[w], concs, records, w)]
    ratios = other_ratios(summaries.get("hot", {}), concs)
    failures = []
    for r in records:
        if r["kind"] == "sanity" and not r["ok"]:
            failures.append(f"{r['target']}: two GETs answered {r['first']!r} then {r['second']!r}")
        if r["kind"] == "wrk" and r["check"] is not None and not r["check"]["ok"]:
            c = r["check"]
            failures.append(f"{r['target']} {r['workload']} c={r['conc']} round {r['round']}: counter "
                            f"{c['counter']} outside [{c['low']}, {c['high']}]")
    md = markdown(args, summaries, workloads, targets, ratios, records, failures, concs)
    with open(f"{args.out}/results.md", "w") as f:
        f.write(md)
    doc = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": args.machine,
        "load_average_before_after": args.load,
        "nice": args.nice,
        "tally": args.tally,
        "commit": args.commit,
        "settings": {"quick": bool(args.quick), "duration_s": args.duration,
                     "warmup_s": args.warmup, "rounds": args.rounds, "wrk_threads": 2,
                     "concurrency": concs},
        "labels": LABELS,
        "summary": {w: {t: {str(c): s for c, s in cs.items()} for t, cs in summaries[w].items()}
                    for w in workloads},
        "targets": targets,
        "ratios": ratios,
        "correctness": {"ok": not failures, "failures": failures},
        "runs": records,
    }
    with open(f"{args.out}/results.json", "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("line")
    pl.add_argument("raw")
    pr = sub.add_parser("report")
    pr.add_argument("raw")
    pr.add_argument("--out", required=True)
    pr.add_argument("--machine", default="unknown")
    pr.add_argument("--duration", type=int, required=True)
    pr.add_argument("--warmup", type=int, required=True)
    pr.add_argument("--rounds", type=int, required=True)
    pr.add_argument("--quick", type=int, default=0)
    pr.add_argument("--tally", default="tally")
    pr.add_argument("--load", default="unknown")
    pr.add_argument("--nice", type=int, default=0)
    pr.add_argument("--commit", default="unknown")
    args = p.parse_args()
    return line(args.raw) if args.cmd == "line" else report(args)


if __name__ == "__main__":
    sys.exit(main())
