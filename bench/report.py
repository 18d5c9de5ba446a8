"""The benchmark's printed report: progress lines, the tables, and the targets with ✓/✗."""

from __future__ import annotations

from typing import Any, Final

# What the lead tunes against (issue #11); printed beside the measurements, never asserted.
SEND_RATIO: Final = 0.9
KANNEL_RATIO: Final = 1.0  # SQLite end to end, msg/s and messages per CPU second, ÷ Kannel's
POSTGRES_TO_SQLITE: Final = 0.7  # PostgreSQL end to end ÷ SQLite's, same worker count
P99_OVER_VENDOR_MS: Final = {"sqlite": 5.0, "postgresql": 10.0}
RSS_GROWTH_PCT: Final = 10.0
X: Final = "\u00d7"  # the multiplication sign, spelled out for the linter


def _lat(result: dict[str, Any]) -> str:
    lat = result["latency"]
    return f"{lat['p50_ms']:.1f}/{lat['p90_ms']:.1f}/{lat['p99_ms']:.1f}"


def _cpu(result: dict[str, Any], group: str) -> str:
    value = result["cpu"].get(group, {}).get("us_per_msg")
    return "-" if value is None else f"{value:,.0f}"


def phase_line(result: dict[str, Any]) -> str:
    bad = result["sent"] - result["ok"]
    return (f"{result['rps']:>8,.0f} req/s  p50/p90/p99 {_lat(result)} ms  "
            f"{result['sent']:,} sent{f', {bad:,} NOT OK' if bad else ''}  "
            f"load gen {result['client_cores']:.2f} cores, "
            f"late p99 {result['schedule_lag']['p99_ms']:.1f} ms")


def e2e_line(result: dict[str, Any]) -> str:
    check = result["check"]
    return (f"{result['rate_msg_s']:>8,.0f} msg/s  {check['delivered']:,}/{check['accepted']:,} "
            f"reports  send→report p50/p99 {check['latency']['p50_ms']:.0f}/"
            f"{check['latency']['p99_ms']:.0f} ms  custom_data "
            f"{'all back' if result['custom_data_ok'] else 'NOT ALL BACK'}")


def _rate_key(result: dict[str, Any]) -> str | None:
    rates = result["vendor_alone"]
    return "200" if "200" in rates else next(iter(rates), None)


def _sqlite_run(result: dict[str, Any], workers: int) -> dict[str, Any] | None:
    return next((r for r in result["runs"] if r["status"] == "ok" and r["db"] == "sqlite"
                 and r["workers"] == workers), None)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    key = _rate_key(result)
    peer = result.get("kannel", {})
    for run in result["runs"]:
        if run["status"] != "ok":
            continue
        p99 = vendor_p99 = None
        if key is not None and key in run["rates"]:
            p99 = run["rates"][key]["latency"]["p99_ms"]
            vendor_p99 = result["vendor_alone"][key]["latency"]["p99_ms"]
        e2e, over = run["e2e"], P99_OVER_VENDOR_MS[run["db"]]
        checks = [
            (f"send ≥ {SEND_RATIO}{X} baseline", run["ratio_to_baseline"], X,
             run["ratio_to_baseline"] >= SEND_RATIO),
            (f"p99 @{key}/s ≤ vendor's p99 + {over:g} ms",
             None if p99 is None or vendor_p99 is None else round(p99 - vendor_p99, 2),
             " ms over", p99 is not None and vendor_p99 is not None and p99 - vendor_p99 <= over),
            (f"RSS ≤ +{RSS_GROWTH_PCT:g}% after the long run", run["soak"]["rss"]["growth_pct"], "%",
             run["soak"]["rss"]["growth_pct"] <= RSS_GROWTH_PCT),
        ]
        if run["db"] == "sqlite" and peer.get("status") == "ok":
            rate = e2e["rate_msg_s"] / peer["e2e_msg_s"]
            cpu = peer["cpu_us_per_msg"] / (e2e["cpu"]["connector"]["us_per_msg"] or 1e9)
            checks += [
                (f"end to end msg/s ≥ {KANNEL_RATIO:g}{X} Kannel's", round(rate, 2), X,
                 rate >= KANNEL_RATIO),
                (f"messages per CPU second ≥ {KANNEL_RATIO:g}{X} Kannel's", round(cpu, 2), X,
                 cpu >= KANNEL_RATIO),
            ]
        sqlite = _sqlite_run(result, run["workers"])
        if run["db"] == "postgresql" and sqlite is not None:
            ratio = e2e["rate_msg_s"] / max(1e-9, sqlite["e2e"]["rate_msg_s"])
            checks.append((f"end to end ≥ {POSTGRES_TO_SQLITE:g}{X} SQLite's", round(ratio, 2), X,
                           ratio >= POSTGRES_TO_SQLITE))
        rows += [{"run": run["name"], "target": t, "measured": m, "unit": u, "met": bool(ok)}
                 for t, m, u, ok in checks]
    return rows


def _table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nconnector benchmark · {m['nproc']} cores · Python {m['python']} · commit "
          f"{m['commit']} · load average {m['loadavg_before'][0]:.2f} before, "
          f"{m['loadavg_after'][0]:.2f} after")
    for note in result["notes"]:
        print(f"  note: {note}")
    key = _rate_key(result)
    vendor = result["vendor_alone"].get(key) if key else None
    if vendor:
        print(f"  vendor fake alone @{key}/s: p50/p90/p99 {_lat(vendor)} ms")
    print("\nSend path (callbacks off). Latency in ms; CPU in µs per request, all processes of "
          "each server together\n")
    rows = []
    for workers, base in result["baseline"].items():
        send = base["send"]
        rows.append([f"baseline w{workers}", f"{send['rps']:,.0f}", f"1{X}", _lat(send), "-",
                     _cpu(send, "server"), _cpu(send, "vendor_fake"),
                     f"{send['client_cpu_us_per_req']:,.0f} ({send['client_cores']:.2f} cores)"])
    for run in result["runs"]:
        if run["status"] != "ok":
            rows.append([run["name"], run["status"], "-", "-", "-", "-", "-", "-"])
            continue
        send, at = run["send"], run["rates"].get(key or "", None)
        rows.append([run["name"], f"{send['rps']:,.0f}", f"{run['ratio_to_baseline']:.2f}{X}",
                     _lat(send), _lat(at) if at else "-", _cpu(send, "connector"),
                     _cpu(send, "vendor_fake"),
                     f"{send['client_cpu_us_per_req']:,.0f} ({send['client_cores']:.2f} cores)"])
    _table(["run", "req/s", f"{X} baseline", "p50/p90/p99 saturated", f"p50/p90/p99 @{key}/s",
            "server CPU", "vendor fake CPU", "load gen CPU"], rows)

    print("\nEnd to end (send, `sent` + `delivered` callbacks, report received). CPU in µs per "
          "message\n")
    rows = []
    for run in (r for r in result["runs"] if r["status"] == "ok"):
        e2e, soak = run["e2e"], run["soak"]
        per = e2e["cpu"]["connector"]["per_process_us_per_msg"]
        split = " + ".join(f"{run['processes'].get(pid, pid).split()[0]} {us:,.0f}"
                           for pid, us in per.items() if us)
        rss = soak["rss"]
        rows.append([run["name"], f"{e2e['rate_msg_s']:,.0f}",
                     f"{e2e['check']['latency']['p50_ms']:.0f}/{e2e['check']['latency']['p99_ms']:.0f}",
                     f"{_cpu(e2e, 'connector')} ({split})", _cpu(e2e, "postgres"),
                     "-" if e2e.get("statements_per_msg") is None
                     else f"{e2e['statements_per_msg']:.1f}", _cpu(e2e, "vendor_fake"),
                     _cpu(e2e, "receiver"), f"{soak['check']['delivered']:,}",
                     f"{rss['peak_kb'] / 1024:,.0f}", f"{rss['growth_pct']:+.1f}%",
                     "✓" if run["custom_data_ok"] else "✗ (see JSON)"])
    _table(["run", "msg/s", "send→report p50/p99 ms", "connector CPU (per process)",
            "PostgreSQL server CPU", "store statements", "vendor fake CPU", "receiver CPU",
            "long run msgs", "peak RSS MB", "RSS growth",
            "every custom_data back"], rows)

    peer = result.get("kannel", {})
    if peer.get("status") == "ok":
        print("\nBeside Kannel 1.4.5 in the same run (../shared/bench/peer_kannel.sh: wrk, instant "
              "vendor stub, two delivery reports per message; medians)\n")
        rows = [["Kannel", f"{peer['accept_rps']:,.0f}", f"{peer['e2e_msg_s']:,.0f}",
                 f"{peer['cpu_us_per_msg']:,.0f}", "1" + X, "1" + X]]
        for run in (r for r in result["runs"] if r["status"] == "ok"):
            e2e = run["e2e"]
            us = e2e["cpu"]["connector"]["us_per_msg"] or 1e9
            rows.append([f"connector {run['name']}", f"{run['send']['rps']:,.0f}",
                         f"{e2e['rate_msg_s']:,.0f}", f"{us:,.0f}",
                         f"{e2e['rate_msg_s'] / peer['e2e_msg_s']:.2f}{X}",
                         f"{peer['cpu_us_per_msg'] / us:.2f}{X}"])
        _table(["gateway", "accepted req/s", "end to end msg/s", "gateway CPU µs/msg",
                f"msg/s {X} Kannel", f"msgs per CPU second {X} Kannel"], rows)

    if result["targets"]:
        print("\nTargets (tuning goals, not asserted)\n")
        _table(["run", "target", "measured", ""],
               [[t["run"], t["target"],
                 "-" if t["measured"] is None else f"{t['measured']:,}{t['unit']}",
                 "✓" if t["met"] else "✗"] for t in result["targets"]])
