"""The five fault scenarios of issue #4. Each prints what it did and what it counted, and
fails (with every wrong count named) when a count is not what the contract promises."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import shared  # noqa: F401  (kept for readers: the credentials every process shares)
from harness import (
    RETRYABLE,
    Connector,
    Fakes,
    Platform,
    Reports,
    Result,
    Send,
    bounded_gather,
    fresh_database,
    outbox_probe,
    pg_available,
    pg_ctl,
    statuses,
    vendor_counts,
    wait_for,
)


@dataclass
class Ctx:
    tmp: Path
    fakes: Fakes
    short: bool

    @property
    def mode(self) -> str:
        return "short" if self.short else "full"

    def pick(self, short: Any, full: Any) -> Any:
        return short if self.short else full


def _ts(rfc3339: str | None) -> float | None:
    if rfc3339 is None:
        return None
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


async def _start_all(connectors: list[Connector]) -> None:
    await asyncio.gather(*(c.start() for c in connectors))


def _stop_all(connectors: list[Connector]) -> None:
    for connector in connectors:
        connector.stop()


async def _drain(ctx: Ctx, rids: set[str], within: float, names: set[str] | None = None,
                 stalled: Callable[[], Awaitable[bool]] | None = None,
                 ) -> tuple[Reports, dict[str, Any], float]:
    """Wait until every rid in `rids` has a delivered report and no vendor callback is
    pending (or `within` seconds, or `stalled()` says nothing will move any more); the
    receiver's record, the fakes' state and the wait."""
    started = time.monotonic()

    async def done() -> bool:
        stats = await ctx.fakes.stats()
        if not stats["vendor"]["callbacks_pending"]:
            reports = Reports((await ctx.fakes.state())["posts"], names)
            if all(reports.delivered(rid) for rid in rids):
                return True
        return stalled is not None and await stalled()

    await wait_for(done, within, interval=0.5)
    state = await ctx.fakes.state()
    return Reports(state["posts"], names), state, round(time.monotonic() - started, 1)


def _non_retryable(sends: list[Send]) -> Counter[str]:
    """Answers the platform would record as permanent failures (or a connector gone)."""
    return Counter(str(a.status) for s in sends for a in s.attempts
                   if a.status != 200 and a.status not in RETRYABLE)


def _check_reports(result: Result, reports: Reports, acked: set[str], waited: float) -> None:
    missing = sorted(rid for rid in acked if not reports.delivered(rid))
    result.did("wait for reports (s)", waited)
    result.count("acknowledged messages without a delivered report", len(missing), "0",
                 not missing)
    if missing:
        result.note(f"missing reports, e.g. {missing[:5]}")
    result.count("(message, status) with more than one event_id", reports.split_events(), "0",
                 reports.split_events() == 0)
    result.did("report redeliveries (same event_id, allowed)", reports.redeliveries())
    result.count("custom_data mismatches", reports.mismatches, "0", reports.mismatches == 0)


# ---------------------------------------------------------------- 1. duplicate storm


async def dup_storm(ctx: Ctx) -> Result:
    result = Result("dup_storm", "duplicate storm: 2 PostgreSQL replicas + 2 processes on one "
                    "SQLite file, ~30% repeated request_ids", ctx.mode)
    why = await pg_available()
    if why:
        result.fail(why)
        return result
    unique = ctx.pick(300, 2500)  # per cluster
    await ctx.fakes.reset()
    await ctx.fakes.vendor(delay=0.03)  # the original is still in flight when repeats come
    rng = random.Random(4)
    async with fresh_database() as dsn:
        clusters = {
            "pg": [Connector(f"dup-pg{i}", ctx.tmp, {"CONNECTOR_DATABASE_URL": dsn})
                   for i in range(2)],
            "sqlite": [Connector(f"dup-sq{i}", ctx.tmp, {
                "CONNECTOR_DATABASE_URL": f"sqlite:///{ctx.tmp / 'dup-shared.db'}"})
                for i in range(2)],
        }
        everyone = [c for group in clusters.values() for c in group]
        platform = Platform(ctx.fakes.vendor_url)
        try:
            await _start_all(clusters["pg"])
            for connector in clusters["sqlite"]:  # one at a time: the file's first migration
                await connector.start()
            # The plan: each cluster's unique ids in order, and ~30% of all sends repeating an
            # id shortly after it (then often still in flight) or much later (stored).
            sends: list[tuple[str, str, int]] = []
            for name in clusters:
                order: list[tuple[str, str, int]] = [
                    (name, f"{name}-{i}-{rng.randrange(10**6)}", i) for i in range(unique)]
                repeats = round(unique * 0.3 / 0.7)
                for _ in range(repeats):
                    original = rng.randrange(unique)
                    near = rng.random() < 0.6
                    offset = rng.randint(0, 12) if near else rng.randint(13, unique)
                    order.insert(min(len(order), original + 1 + offset), order[original])
                sends.extend(order)
            sends.sort(key=lambda s: (s[2] + rng.random() * 3))  # interleave both clusters
            url = ctx.fakes.report_url("dup")
            lives: list[tuple[str, Send]] = []

            def job(cluster: str, rid: str, seq: int) -> Callable[[], Awaitable[Send]]:
                async def run() -> Send:
                    life = await platform.send(rid, seq, clusters[cluster], url)
                    lives.append((cluster, life))
                    return life
                return run

            began = time.monotonic()
            await bounded_gather([job(*s) for s in sends], ctx.pick(48, 64))
            send_seconds = time.monotonic() - began
            all_rids = {s[1] for s in sends}
            reports, state, waited = await _drain(ctx, all_rids, ctx.pick(40, 180), {"dup"})
            dedupe: Counter[str] = Counter()
            async with aiohttp.ClientSession(trust_env=False) as session:
                for c in everyone:
                    for how in ("stored", "waited", "wait_timeout"):
                        dedupe[how] += int(await c.metric(
                            session, f'connector_dedupe_total{{result="{how}"}}'))
        finally:
            await platform.close()
            _stop_all(everyone)

    per_rid = Counter(s[1] for s in sends)
    result.did("processes", "pg: 2 replicas on one database, sqlite: 2 on one file")
    result.did("sends", {c: sum(1 for s in sends if s[0] == c) for c in clusters})
    result.did("unique request_ids", dict.fromkeys(clusters, unique))
    result.did("repeated sends", len(sends) - len(per_rid))
    result.did("share of sends that repeat an id", round(1 - len(per_rid) / len(sends), 3))
    result.did("request_ids sent more than once", sum(1 for n in per_rid.values() if n > 1))
    result.did("most sends of one request_id", max(per_rid.values()))
    result.did("send phase (s), sends/s", f"{send_seconds:.1f}, "
               f"{len(sends) / max(send_seconds, 1e-3):.0f}")
    result.did("repeats answered from the store / after waiting in flight",
               f"{dedupe['stored']} / {dedupe['waited']} (wait timeouts {dedupe['wait_timeout']})")
    answers = statuses([life for _, life in lives])
    result.did("answers the platform saw", dict(answers))
    result.count("answers other than 200", sum(n for s, n in answers.items() if s != "200"), "0",
                 set(answers) == {"200"})
    finals: dict[str, set[tuple[Any, bytes]]] = {}
    for _, life in lives:
        last = life.attempts[-1]
        finals.setdefault(life.rid, set()).add((last.status, last.body))
    differing = [rid for rid, outs in finals.items() if len(outs) > 1]
    result.count("request_ids whose repeats got another status or body", len(differing), "0",
                 not differing)
    if differing:
        example = differing[0]
        result.note(f"{example}: {sorted((s, b[:120]) for s, b in finals[example])}")
    calls, _created = vendor_counts(state["calls"])
    result.count("vendor create calls", len(state["calls"]), f"{len(per_rid)} (one per id)",
                 len(state["calls"]) == len(per_rid))
    result.count("vendor calls per request_id, max", max(calls.values(), default=0), "1",
                 max(calls.values(), default=0) == 1)
    never = [rid for rid in per_rid if calls[rid] == 0]
    result.count("request_ids that never reached the vendor", len(never), "0", not never)
    result.count("vendor callbacks given up", len(state["callbacks_given_up"]), "0",
                 not state["callbacks_given_up"])
    _check_reports(result, reports, set(per_rid), waited)
    return result


# ---------------------------------------------------------------- 2. crash


async def crash(ctx: Ctx, backend: str = "postgresql") -> Result:
    result = Result(f"crash_{'pg' if backend == 'postgresql' else 'sqlite'}",
                    f"kill -9 under load, restart ({backend}, 2 processes)", ctx.mode)
    if backend == "postgresql":
        why = await pg_available()
        if why:
            result.fail(why)
            return result
    seconds = ctx.pick(9.0, 60.0)
    every = ctx.pick(1.0, 3.0)
    await ctx.fakes.reset()
    await ctx.fakes.vendor(delay=0.01)
    env = {"CONNECTOR_VENDOR_TIMEOUT": "2", "CONNECTOR_INFLIGHT_WAIT": "2",
           "CONNECTOR_REPORT_TIMEOUT": "1", "CONNECTOR_REPORT_BACKOFF": "0.2",
           "CONNECTOR_REPORT_MAX_BACKOFF": "2"}
    async with contextlib.AsyncExitStack() as stack:
        if backend == "postgresql":
            env["CONNECTOR_DATABASE_URL"] = await stack.enter_async_context(fresh_database())
        else:
            env["CONNECTOR_DATABASE_URL"] = f"sqlite:///{ctx.tmp / 'crash-shared.db'}"
        # Short: the killed processes serve only; one `connector worker` (never killed)
        # delivers reports, so no report waits out a dead dispatcher's lease
        # (CONNECTOR_REPORT_TIMEOUT * 3 + 30 s). Full: the killed processes dispatch too.
        serve_env = {**env, "CONNECTOR_DISPATCHER": "false"} if ctx.short else env
        procs = [Connector(f"crash-{backend[:2]}{i}", ctx.tmp, serve_env) for i in range(2)]
        workers = [Connector(f"crash-{backend[:2]}-worker", ctx.tmp, env, command="worker")
                   ] if ctx.short else []
        platform = Platform(ctx.fakes.vendor_url)
        lives: list[Send] = []
        kills: list[float] = []
        restarts: list[float] = []
        try:
            for connector in procs + workers:
                await connector.start()
            url = ctx.fakes.report_url("crash")
            end = time.monotonic() + seconds
            seq = 0

            async def worker(n: int) -> None:
                nonlocal seq
                while time.monotonic() < end:
                    seq += 1
                    rid = f"crash-{seq}"
                    lives.append(await platform.send(rid, seq, procs, url, max_attempts=40,
                                                     budget=25.0))

            async def killer() -> None:
                victim = 0
                await asyncio.sleep(every / 2)
                while time.monotonic() + every / 2 < end:
                    procs[victim].kill()
                    kills.append(time.time())
                    await asyncio.sleep(0.3)
                    began_restart = time.monotonic()
                    await procs[victim].start()
                    restarts.append(time.monotonic() - began_restart)
                    victim = 1 - victim
                    await asyncio.sleep(every)

            began = time.monotonic()
            await asyncio.gather(killer(), *(worker(n) for n in range(ctx.pick(12, 16))))
            send_seconds = time.monotonic() - began
            acked = {life.rid for life in lives if life.acked}
            reports, state, waited = await _drain(ctx, acked, ctx.pick(60, 120), {"crash"})
            alive = sum(c.alive for c in procs)
        finally:
            await platform.close()
            _stop_all(procs + workers)

    result.did("load (s), concurrency", f"{send_seconds:.1f}, {ctx.pick(12, 16)}")
    result.did("kill -9 + restart", f"{len(kills)} (every {every:g} s, alternating)")
    result.did("restart to ready (s), mean", round(statistics.mean(restarts), 2)
               if restarts else "-")
    result.did("report dispatchers", "1 separate worker, not killed" if ctx.short else
               "inside the killed processes")
    result.did("request_ids sent", len(lives))
    finals = Counter(str(life.final) for life in lives)
    result.did("final answer per request_id", dict(finals))
    result.did("answers the platform saw", dict(statuses(lives)))
    result.count("acknowledged (200)", len(acked), "> 0", len(acked) > 0)
    # What a kill -9 does to a connection: refused, dropped, or cut in the middle of an
    # answer (ClientPayloadError: the headers arrived, the body did not). The platform sees
    # each as a network error and retries.
    bad = {s: n for s, n in _non_retryable(lives).items()
           if s not in ("ServerDisconnectedError", "ClientConnectorError", "ClientOSError",
                        "ClientPayloadError")}
    result.count("answers neither 200 nor retryable (killed-process errors aside)",
                 sum(bad.values()), "0", not bad)
    if bad:
        result.note(f"non-retryable answers: {bad}")
    calls, created = vendor_counts(state["calls"])
    twice = sorted(rid for rid, n in created.items() if n > 1)
    result.count("request_ids created twice at the vendor", len(twice), "0", not twice)
    acked_twice = [rid for rid in acked if created[rid] != 1]
    result.count("acknowledged request_ids not created exactly once", len(acked_twice), "0",
                 not acked_twice)
    result.did("vendor calls per request_id, max", max(calls.values(), default=0))
    unacked_created = sum(1 for life in lives if not life.acked and created[life.rid])
    result.did("taken by the vendor but not acknowledged (ambiguous)", unacked_created)
    result.count("processes alive at the end", alive, "2", alive == 2)
    result.count("vendor callbacks given up", len(state["callbacks_given_up"]), "0",
                 not state["callbacks_given_up"])
    _check_reports(result, reports, acked, waited)
    return result


async def crash_sqlite(ctx: Ctx) -> Result:
    return await crash(ctx, "sqlite")


# ---------------------------------------------------------------- 3. receiver outage


def _backoff_check(attempts: list[dict[str, Any]], base: float, cap: float, slack: float
                   ) -> tuple[int, int]:
    """(retries earlier than the backoff allows, retries later than it plus `slack`)."""
    early = late = 0
    times = [_ts(a["at"]) or 0.0 for a in attempts]
    for k in range(len(times) - 1):
        ceiling = min(cap, base * 2 ** k)
        gap = times[k + 1] - times[k]
        early += gap < ceiling / 2 - 0.02
        late += gap > ceiling + slack
    return early, late


async def receiver_outage(ctx: Ctx) -> Result:
    result = Result("receiver_outage", "report receiver answers 503, then refuses "
                    "connections, then returns", ctx.mode)
    n = ctx.pick(60, 400)
    n_h = ctx.pick(12, 40)
    t503, trefuse = ctx.pick((4.0, 4.0), (60.0, 60.0))
    base, cap = ctx.pick((0.3, 2.0), (1.0, 20.0))
    horizon_h = ctx.pick(3.0, 30.0)
    await ctx.fakes.reset()
    common = {"CONNECTOR_REPORT_BACKOFF": str(base), "CONNECTOR_REPORT_MAX_BACKOFF": str(cap),
              "CONNECTOR_REPORT_TIMEOUT": "2"}
    main = Connector("outage", ctx.tmp, {**common, "CONNECTOR_REPORT_HORIZON": "3600"})
    short_horizon = Connector("horizon", ctx.tmp, {
        **common, "CONNECTOR_REPORT_HORIZON": str(horizon_h)})
    platform = Platform(ctx.fakes.vendor_url)
    phases: list[tuple[str, float]] = []
    try:
        await _start_all([main, short_horizon])
        await ctx.fakes.receiver(mode="503", names={"h": "503"})
        outage_start = time.time()
        phases.append(("503", outage_start))
        jobs = [lambda i=i: platform.send(f"out-{i}", i, [main], ctx.fakes.report_url("main"))
                for i in range(n)]
        jobs += [lambda i=i: platform.send(f"hz-{i}", i, [short_horizon],
                                           ctx.fakes.report_url("h")) for i in range(n_h)]
        lives = await bounded_gather(jobs, 16)
        await wait_for(lambda: _no_callbacks_pending(ctx), 30)
        await asyncio.sleep(max(0.0, outage_start + t503 - time.time()))
        await ctx.fakes.receiver(mode="refuse")
        phases.append(("refused", time.time()))
        await asyncio.sleep(trefuse)
        await ctx.fakes.receiver(mode="ok")
        back = time.time()
        phases.append(("back", back))
        acked = {life.rid for life in lives if life.acked and life.rid.startswith("out-")}
        reports, state, waited = await _drain(ctx, acked, cap * 2 + 30, {"main"})
        async with aiohttp.ClientSession(trust_env=False) as session:
            views = [await main.operator(session, f"out-{i}") for i in range(n)]
            dead_metric = await main.metric(session, "connector_dead_letters_total ")

            async def all_dead() -> bool:
                found = [await short_horizon.operator(session, f"hz-{i}") for i in range(n_h)]
                return all(v and v["reports"] and v["reports"][0]["state"] == "dead"
                           for v in found)

            await wait_for(all_dead, horizon_h + cap + 15, interval=0.5)
            hviews = [await short_horizon.operator(session, f"hz-{i}") for i in range(n_h)]
    finally:
        await platform.close()
        _stop_all([main, short_horizon])

    result.did("messages (main connector), horizon 3600 s", n)
    result.did("outage", f"503 for {phases[1][1] - phases[0][1]:.1f} s, then connection "
               f"refused for {back - phases[1][1]:.1f} s")
    result.did("report backoff: first, max (s)", f"{base:g}, {cap:g}")
    result.count("sends acknowledged", len(acked), str(n), len(acked) == n)
    main_posts = [p for p in state["posts"] if p["name"] == "main"]
    during = [p for p in main_posts if p["t"] < back]
    result.did("report POSTs answered 503 during the outage", sum(p["status"] == 503
                                                                 for p in during))
    _check_reports(result, reports, acked, waited)
    first_after = [reports.first_ok[eid] - back for rid in acked
                   for eid in reports.events.get(rid, {}).get("delivered", ())
                   if eid in reports.first_ok]
    late_limit = cap + 2.0
    slowest = max(first_after, default=0.0)
    result.count("slowest report after the receiver returned (s)", round(slowest, 2),
                 f"<= max backoff + 2 = {late_limit:g}", slowest <= late_limit)
    states: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    attempts_per: list[int] = []
    early = late = bad_shape = 0
    for view in views:
        if not view or not view["reports"]:
            states["no report"] += 1
            continue
        rep = view["reports"][0]
        states[rep["state"]] += 1
        attempts = rep["attempts"]
        attempts_per.append(len(attempts))
        codes.update(str(a["status_code"]) for a in attempts)
        outcomes = [a["outcome"] for a in attempts]
        bad_shape += outcomes != ["retry"] * (len(outcomes) - 1) + ["delivered"]
        e, lt = _backoff_check(attempts, base, cap, slack=ctx.pick(1.0, 2.0))
        early, late = early + e, late + lt
    result.did("report states", dict(states))
    result.count("dead-lettered (main, horizon 3600 s)", states.get("dead", 0) + int(
        dead_metric), "0", states.get("dead", 0) == 0 and dead_metric == 0)
    result.did("attempt status codes (None: no connection)", dict(codes))
    if attempts_per:
        result.did("attempts per report: min/median/max",
                   f"{min(attempts_per)}/{statistics.median(attempts_per):g}/"
                   f"{max(attempts_per)}")
    result.count("reports whose attempts are not retry..., delivered", bad_shape, "0",
                 bad_shape == 0)
    result.count("retries earlier than the backoff allows (< ceiling/2)", early, "0",
                 early == 0)
    result.count("retries later than the backoff plus slack (> ceiling + slack)", late, "0",
                 late == 0)
    # The same outage, past a short horizon: dead letters, but none before the horizon.
    hstates: Counter[str] = Counter()
    before: list[float] = []
    for view in hviews:
        if not view or not view["reports"]:
            hstates["no report"] += 1
            continue
        rep = view["reports"][0]
        hstates[rep["state"]] += 1
        created = _ts(view["delivered_at"]) or 0.0
        for attempt in rep["attempts"]:
            if attempt["outcome"] == "dead":
                early_by = created + horizon_h - (_ts(attempt["at"]) or 0.0)
                if early_by > 0.01:
                    before.append(early_by)
    result.did(f"short-horizon connector ({horizon_h:g} s), receiver always 503: states",
               dict(hstates))
    result.count("reports past the horizon that were dead-lettered", hstates.get("dead", 0),
                 str(n_h), hstates.get("dead", 0) == n_h)
    result.count("dead-lettered BEFORE the horizon", len(before), "0", not before)
    if before:
        result.note(f"dead-lettered up to {max(before):.2f} s before created_at + horizon "
                    f"(median {statistics.median(before):.2f} s)")
    return result


async def _no_callbacks_pending(ctx: Ctx) -> bool:
    return not (await ctx.fakes.stats())["vendor"]["callbacks_pending"]


# ---------------------------------------------------------------- 4. database restart


async def db_restart(ctx: Ctx) -> Result:
    result = Result("db_restart", "PostgreSQL restarted mid-load under 2 replicas", ctx.mode)
    why = await pg_available()
    if why:
        result.fail(why)
        return result
    seconds = ctx.pick(10.0, 45.0)
    down_at, down_for = ctx.pick((2.5, 3.0), (10.0, 15.0))
    await ctx.fakes.reset()
    await ctx.fakes.vendor(delay=0.01)
    env = {"CONNECTOR_VENDOR_TIMEOUT": "2", "CONNECTOR_INFLIGHT_WAIT": "2",
           "CONNECTOR_REPORT_TIMEOUT": "1", "CONNECTOR_REPORT_BACKOFF": "0.2",
           "CONNECTOR_REPORT_MAX_BACKOFF": "2"}
    window: dict[str, float] = {}
    async with fresh_database() as dsn:
        env["CONNECTOR_DATABASE_URL"] = dsn
        procs = [Connector(f"db-pg{i}", ctx.tmp, env) for i in range(2)]
        platform = Platform(ctx.fakes.vendor_url)
        lives: list[Send] = []
        ctl: list[str] = []
        try:
            await _start_all(procs)
            url = ctx.fakes.report_url("db")
            end = time.monotonic() + seconds
            seq = 0

            async def worker() -> None:
                nonlocal seq
                while time.monotonic() < end:
                    seq += 1
                    lives.append(await platform.send(f"db-{seq}", seq, procs, url,
                                                     max_attempts=60, budget=40.0))

            async def outage() -> None:
                await asyncio.sleep(down_at)
                window["down"] = time.time()
                try:
                    code, out = await asyncio.to_thread(pg_ctl, "stop")
                    ctl.append(f"stop: {code} {out}")
                    window["stopped"] = time.time()
                    await asyncio.sleep(down_for)
                finally:
                    window["starting"] = time.time()
                    code, out = await asyncio.to_thread(pg_ctl, "start")
                    ctl.append(f"start: {code} {out}")
                    window["up"] = time.time()
                async with aiohttp.ClientSession(trust_env=False) as session:

                    async def ready() -> bool:
                        for c in procs:
                            try:
                                async with session.get(c.url + "/readyz") as answer:
                                    if answer.status != 200:
                                        return False
                            except aiohttp.ClientError:
                                return False
                        return True

                    if await wait_for(ready, 30, interval=0.1):
                        window["ready"] = time.time()

            await asyncio.gather(outage(), *(worker() for _ in range(12)))
            loaded = time.time()
            probe = [await platform.send(f"db-probe-{i}", 10**6 + i, procs, url, retry=False)
                     for i in range(20)]
            acked = {life.rid for life in lives + probe if life.acked}
            probes: list[tuple[float, int, int]] = []

            async def stalled() -> bool:
                # Reports due for > 5 s that no dispatcher leases, and the outbox not moving
                # for 3 s: every dispatcher has stopped; waiting longer changes nothing.
                seen = await outbox_probe(dsn)
                probes.append((time.monotonic(), seen["pending"], seen["overdue_unleased"]))
                recent = [p for p in probes if p[0] > probes[-1][0] - 3.0]
                return (probes[-1][0] - probes[0][0] >= 3.0 and len(recent) >= 4
                        and len({p[1] for p in recent}) == 1 and min(p[2] for p in recent) > 0)

            reports, state, waited = await _drain(ctx, acked, ctx.pick(60, 120), {"db"},
                                                  stalled)
            outbox = await outbox_probe(dsn)
            alive = sum(c.alive for c in procs)
            missing = {rid for rid in acked if not reports.delivered(rid)}
            rescued = -1
            if missing and not ctx.short:
                # Are they lost, or stuck in the outbox? A fresh dispatcher tells.
                extra = Connector("db-rescue-worker", ctx.tmp, env, command="worker")
                procs.append(extra)
                await extra.start()
                after, _, _ = await _drain(ctx, missing, 60, {"db"})
                rescued = sum(after.delivered(rid) for rid in missing)
        finally:
            await platform.close()
            _stop_all(procs)

    up = window.get("up", loaded)
    result.did("load (s), concurrency", f"{seconds:g}, 12")
    result.did("database down (s): stop..start returned, at load second",
               f"{up - window.get('down', up):.1f}, {down_at:g}")
    for line in ctl:
        if not line.split(":")[1].strip().startswith("0"):
            result.fail(f"pg_ctlcluster {line}")
    result.did("request_ids sent", len(lives))
    during = [a for life in lives for a in life.attempts
              if window.get("stopped", up) <= a.t <= window.get("starting", up)]
    result.did("answers while the database was down",
               dict(Counter(str(a.status) for a in during)))
    result.did("answers overall", dict(statuses(lives)))
    bad = _non_retryable(lives)
    result.count("answers neither 200 nor 429/502/503/504", sum(bad.values()), "0", not bad)
    if bad:
        result.note(f"non-retryable answers: {dict(bad)}")
    result.did("final answer per request_id", dict(Counter(str(life.final) for life in lives)))
    result.count("processes alive (never restarted)", alive, "2", alive == 2)
    ready_after = window["ready"] - up if "ready" in window else None
    result.count("both /readyz 200 again, s after the server was up", None if ready_after is None
                 else round(ready_after, 2), "<= 30", ready_after is not None)
    first_ok = min((a.t for life in lives for a in life.attempts
                    if a.status == 200 and a.t > window.get("starting", loaded)), default=None)
    result.did("first 200 after the restart began (s)", "-" if first_ok is None else
               round(first_ok - window.get("starting", loaded), 2))
    probe_ok = sum(p.final == 200 for p in probe)
    result.count("fresh sends after recovery answered 200 at once", probe_ok, "20",
                 probe_ok == 20)
    _calls, created = vendor_counts(state["calls"])
    twice = sorted(rid for rid, k in created.items() if k > 1)
    result.count("request_ids created twice at the vendor", len(twice), "0", not twice)
    result.did("taken by the vendor but not acknowledged (ambiguous)",
               sum(1 for life in lives if not life.acked and created[life.rid]))
    cb = state["vendor"]["callback_results"]
    result.did("vendor callbacks refused during the outage (retried)",
               sum(v for k, v in cb.items() if not k.split(":")[1].startswith("2")))
    result.count("vendor callbacks given up", len(state["callbacks_given_up"]), "0",
                 not state["callbacks_given_up"])
    result.count("acknowledged", len(acked), "> 0", len(acked) > 0)
    _check_reports(result, reports, acked, waited)
    result.count("reports due > 5 s that no dispatcher leases (at the end)",
                 outbox["overdue_unleased"], "0", outbox["overdue_unleased"] == 0)
    result.did("outbox at the end", outbox)
    if rescued >= 0:
        result.did("missing reports delivered once a fresh `connector worker` ran",
                   f"{rescued} of {len(missing)}")
    return result


# ---------------------------------------------------------------- 5. vendor faults

FAULT_CLASSES: dict[str, list[str]] = {
    "normal": [],
    "slow": ["slow"],
    "500 once": ["500"],
    "502 twice": ["502", "502"],
    "503 once": ["503"],
    "429 Retry-After": ["429"],
    "503, 429, slow": ["503", "429", "slow"],
    "timeout (not taken)": ["timeout_before"],
    "timeout (taken)": ["timeout_after"],
    "reset (not taken)": ["reset_before"],
    "reset (taken)": ["reset_after"],
}
AMBIGUOUS = {"timeout (not taken)", "timeout (taken)", "reset (not taken)", "reset (taken)"}
TAKEN = {"timeout (taken)", "reset (taken)"}


async def vendor_faults(ctx: Ctx) -> Result:
    result = Result("vendor_faults", "vendor timeouts, slow answers, 5xx, 429 with Retry-After, "
                    "resets, refused connections", ctx.mode)
    per_class = ctx.pick(6, 40)
    down_n = ctx.pick(10, 40)
    down_for = ctx.pick(2.0, 5.0)
    await ctx.fakes.reset()
    await ctx.fakes.vendor(slow=0.4, hold=1.6, retry_after=1)
    plan: dict[str, list[str]] = {}
    cls_of: dict[str, str] = {}
    for name, faults in FAULT_CLASSES.items():
        for _ in range(per_class):
            rid = f"vf-{name.split()[0]}-{len(cls_of)}"
            plan[rid] = faults
            cls_of[rid] = name
    await ctx.fakes.vendor(plan=plan)
    env = {"CONNECTOR_VENDOR_TIMEOUT": "1", "CONNECTOR_INFLIGHT_WAIT": "3"}
    if not ctx.short:
        env["CONNECTOR_AMBIGUOUS_AFTER"] = "5"
    connector = Connector("vendor-faults", ctx.tmp, env)
    platform = Platform(ctx.fakes.vendor_url)
    url = ctx.fakes.report_url("vf")
    try:
        await connector.start()
        started = time.time()
        rids = list(plan)
        random.Random(5).shuffle(rids)
        attempts, budget = ctx.pick((25, 40.0), (80, 150.0))
        jobs = [lambda rid=rid, i=i: platform.send(rid, i, [connector], url,
                                                   max_attempts=attempts, budget=budget)
                for i, rid in enumerate(rids)]
        lives: list[Send] = await bounded_gather(jobs, 16)
        # The vendor stops listening: connection refused, nothing sent, safe to retry.
        await ctx.fakes.vendor(listening=False)

        async def reopen() -> None:
            await asyncio.sleep(down_for)
            await ctx.fakes.vendor(listening=True)

        down_jobs = [platform.send(f"vf-down-{i}", 5000 + i, [connector], url, max_attempts=40,
                                   budget=40.0) for i in range(down_n)]
        reopening = asyncio.create_task(reopen())
        down_lives: list[Send] = list(await asyncio.gather(*down_jobs))
        await reopening
        for life in down_lives:
            cls_of[life.rid] = "vendor refused connections"
        lives += down_lives
        acked = {life.rid for life in lives if life.acked}
        taken = {rid for rid in plan if cls_of[rid] in TAKEN}
        reports, state, waited = await _drain(ctx, acked | taken, ctx.pick(30, 90), {"vf"})
        if not ctx.short:
            # at_most_once: silence becomes `failed`/`ambiguous` once CONNECTOR_AMBIGUOUS_AFTER
            # has passed, at the dispatcher's next maintenance (every 60 s).
            not_taken = {rid for rid in plan if cls_of[rid] in AMBIGUOUS - TAKEN}
            last = max(a.t for life in lives if life.rid in not_taken for a in life.attempts)
            ticks = math.ceil((last + 5.0 - started) / 60.0)  # maintenance runs every 60 s
            deadline = started + 60.0 * ticks + 15.0

            async def expired() -> bool:
                got = Reports((await ctx.fakes.state())["posts"], {"vf"})
                return all("failed" in got.status_of(rid) for rid in not_taken)

            await wait_for(expired, max(5.0, deadline - time.time()), interval=1.0)
            state = await ctx.fakes.state()
            reports = Reports(state["posts"], {"vf"})
    finally:
        await platform.close()
        connector.stop()

    calls, created = vendor_counts(state["calls"])
    result.did("request_ids per fault class", per_class)
    result.did("vendor down (s), request_ids sent meanwhile", f"{down_for:g}, {down_n}")
    table: dict[str, Counter[str]] = {}
    wrong_final: list[str] = []
    wrong_calls: list[str] = []
    for life in lives:
        name = cls_of[life.rid]
        table.setdefault(name, Counter()).update(str(a.status) for a in life.attempts)
        ambiguous = name in AMBIGUOUS
        if ambiguous:
            ok = life.final == 502 and b"ambiguous_outcome" in life.attempts[-1].body
            # Once the vendor's callback proved it took the message, a repeat gets the 200
            # built from the stored message instead of the ambiguous 502 (issue #15).
            ok = ok or (name in TAKEN and life.final == 200)
        else:
            ok = life.final == 200
        if not ok:
            wrong_final.append(f"{life.rid}={life.final}")
        planned = FAULT_CLASSES.get(name)
        if planned is not None:
            expect_calls = 1 if ambiguous else sum(f != "slow" for f in planned) + 1
            if calls[life.rid] != expect_calls:
                wrong_calls.append(f"{life.rid}: {calls[life.rid]} calls, "
                                   f"expected {expect_calls}")
    for name in [*FAULT_CLASSES, "vendor refused connections"]:
        result.did(f"answers for '{name}'", dict(sorted(table.get(name, Counter()).items())))
    non429 = [a for life in lives for a in life.attempts if a.status == 429
              and not a.retry_after]
    bad = _non_retryable(lives)
    result.count("answers neither 200 nor 429/502/503/504", sum(bad.values()), "0", not bad)
    result.count("429 answers without Retry-After", len(non429), "0", not non429)
    result.count("final answer not 200 (502 ambiguous_outcome for timeouts/resets, or 200 "
                 "once a callback proved the vendor took it)",
                 len(wrong_final), "0", not wrong_final)
    if wrong_final:
        result.note(f"e.g. {wrong_final[:6]}")
    result.count("request_ids with an unexpected number of vendor calls", len(wrong_calls), "0",
                 not wrong_calls)
    if wrong_calls:
        result.note(f"e.g. {wrong_calls[:4]}")
    twice = sorted(rid for rid, k in created.items() if k > 1)
    result.count("request_ids created twice at the vendor", len(twice), "0", not twice)
    result.did("vendor create calls, messages created", f"{len(state['calls'])}, "
               f"{sum(created.values())}")
    missing_taken = sorted(rid for rid in taken if not reports.delivered(rid))
    result.count("ambiguous but taken: delivered report still sent", len(taken) -
                 len(missing_taken), str(len(taken)), not missing_taken)
    never = {rid for rid in plan if cls_of[rid] in AMBIGUOUS - TAKEN}
    if ctx.short:
        stray = sorted(rid for rid in never if reports.status_of(rid))
        result.count("ambiguous and not taken: reports before CONNECTOR_AMBIGUOUS_AFTER", len(
            stray), "0", not stray)
    else:
        failed = sum(1 for rid in never if "failed" in reports.status_of(rid) and any(
            reports.error_codes.get(eid) == "ambiguous"
            for eid in reports.events[rid]["failed"]))
        result.count("ambiguous and not taken: `failed`/`ambiguous` report after "
                     "CONNECTOR_AMBIGUOUS_AFTER", failed, str(len(never)), failed == len(never))
    _check_reports(result, reports, acked, waited)
    return result


SCENARIOS: dict[str, Callable[[Ctx], Awaitable[Result]]] = {
    "dup_storm": dup_storm,
    "crash": crash,
    "receiver_outage": receiver_outage,
    "db_restart": db_restart,
    "vendor_faults": vendor_faults,
}
FULL_ONLY: dict[str, Callable[[Ctx], Awaitable[Result]]] = {
    "crash_sqlite": crash_sqlite,
}
