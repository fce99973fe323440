"""Fairness between tenants (academies), each scenario in one run:

  a. burst vs quiet: one academy's 3,000 jobs arrive (plain SQL, ``submit_many`` or
     ``dispatch_intent``), then another dispatches ten small jobs through ``dispatch_intent``,
     one every 0.3 s: the quiet academy's worst wait (from its ``dispatch_intent`` call to its
     job's start), on a plain
     ``celery -A app worker -c 2`` plus beat and on ``jobq run``'s workers;
  b. a big broadcast on a 50 messages/s channel (KakaoTalk to a fake provider over a real
     socket), then another academy's 20-guardian broadcast: how long the small one takes, the
     big one's rate, what the provider saw (seconds over its rate, 429s, rate used) and the CPU
     per message (``--provider-latency 0.05``: a provider 50 ms away);
  c. weights 2:1 under saturation: the realised shares;
  d. 10,000 tenants with a backlog each plus one newcomer: the newcomer's wait; and the fair
     pick's cost per job at 10, 1,000 and 10,000 tenants waiting;
  e. one tenant alone: drain throughput of 5,000 jobs per entry path (work conservation),
     beside stock Celery (``celery -A bench.stock worker -c <cores> -E``) and bare Celery
     (jobq's Celery settings, a no-op task) drained in the same run;
  f. 1,000,000 pending jobs: Redis memory and messages while workers drain them;
  g. three academies of weights 1, 1, 2 broadcasting at once on the 50/s channel through the
     fake provider: each one's share of what the provider took while all three sent; then
     one capped at 10/s beside two others: its busiest second and the others' use of the rest.

    python -m bench fairness [--scenarios a,b,c,d,e,f,g] [--label after] [--rounds 1]

Issue 24's figure (the quiet academy behind a 3,000-request ``dispatch_intent`` burst, median
of 3 rounds of its worst wait):

    python -m bench fairness --scenarios a --a-paths dispatch --rounds 3

``--label before`` runs what applies (a, b, e, f with fewer jobs) against a checkout without
fair scheduling: run this file with that checkout first on the path, e.g.
``cd ../main && PYTHONPATH=. .venv/bin/python ../wt/bench/fairness.py --label before``.
Results go to bench/results/fairness-<label>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (the "before" checkout's bench package)
    sys.path.insert(0, str(Path.cwd()))

from bench import env  # first: sets up the environment
from bench.broadcast import wait_finished
from bench.common import (
    celery_beat,
    celery_worker,
    make_tenant,
    median,
    print_table,
    redis_client,
    reset_jobs,
    stop_all,
    write_result,
)

try:
    from bench.common import targets
except ImportError:  # an older checkout's bench package (--label before): figures unprinted
    def targets(rows):  # type: ignore[no-redef]
        return [{"figure": f, "value": v, "target": t} for f, v, t in rows]

SLEEP = "system.exec.sleep"
ECHO = "system.exec.echo"
ALL_QUEUES = "celery,dispatch,realtime,bulk,maintenance"


def sql(statement: str, **params: Any) -> list[Any]:
    from sqlalchemy import text

    from app.store import db

    with db.engine().begin() as conn:
        result = conn.execute(text(statement), params)
        return result.all() if result.returns_rows else []


def has_fairness() -> bool:
    return bool(sql("SELECT 1 FROM information_schema.tables WHERE table_name = 'fair_queue'"))


def plain_worker(name: str = "plain") -> list:
    """``celery -A app worker -c 2`` (prefork, as the design names it) plus beat."""
    return [celery_beat(), celery_worker("app", name, "-c", "2", "-Q", ALL_QUEUES)]


def jobq_run_workers(extra_env: dict[str, str] | None = None) -> list:
    from bench.broadcast import start_workers

    # (an older checkout's start_workers takes no environment)
    return start_workers(None, extra_env) if extra_env else start_workers(None)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def wait_ready(procs: list, seconds: float = 60) -> None:
    from app.broker.celery_app import celery_app

    deadline = time.monotonic() + seconds
    for proc in procs:
        if "beat" in proc.name:
            continue
        while not celery_app.control.ping(destination=[proc.name], timeout=0.5):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                stop_all(procs)
                raise SystemExit(f"worker {proc.name} did not start; see {proc.log}")


def burst(path: str, tenant: str, n: int, intent: str, params: dict) -> None:
    if path == "sql":  # as the original callers wrote it: no queue, the sweep routes it
        sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params) "
            "SELECT CAST(:t AS uuid), :k, CAST(:p AS jsonb) FROM generate_series(1, :n)",
            t=tenant, k=intent, p=json.dumps(params), n=n)
    elif path == "submit":
        from app.core.validation import Request
        from app.intake.submit import submit_many
        from app.store import db

        with db.session() as session:
            submit_many(session, [Request(tenant, intent, params) for _ in range(n)])
            session.commit()
    elif path == "dispatch":
        from app.broker.celery_app import celery_app
        from app.tasks.dispatch import dispatch_intent

        with celery_app.producer_or_acquire() as producer:
            for _ in range(n):
                dispatch_intent.apply_async(kwargs={"tenant_id": tenant, "intent_key": intent,
                                                    "intent_params": params}, producer=producer)
    else:
        raise SystemExit(f"unknown path {path!r}")


def dispatch(tenant: str, intent: str, params: dict) -> str:
    from app.tasks.dispatch import dispatch_intent

    return dispatch_intent.delay(tenant_id=tenant, intent_key=intent,
                                 intent_params=params).get(timeout=60)


def waits(ids: list[str]) -> list[float]:
    """Seconds from each job's row to its start (database clock)."""
    return [float(r[0]) for r in sql(
        "SELECT extract(epoch FROM executed_at - created_at) FROM job_executions "
        "WHERE id = ANY(CAST(:ids AS uuid[])) AND executed_at IS NOT NULL", ids=ids)]


def publish_waits(ids: list[str]) -> list[float]:
    """Seconds from each job's row to its hand-off to the broker (its turn in the table)."""
    return [float(r[0]) for r in sql(
        "SELECT extract(epoch FROM published_at - created_at) FROM job_executions "
        "WHERE id = ANY(CAST(:ids AS uuid[])) AND published_at IS NOT NULL", ids=ids)]


# --- a ----------------------------------------------------------------------------------------

def scenario_a(args) -> list[dict]:
    """Each (set-up, path) ``--rounds`` times; the row keeps the medians and every round."""
    rows = []
    for setup in args.a_setups.split(","):
        for path in args.a_paths.split(","):
            runs = [burst_vs_quiet(args, setup, path) for _ in range(args.rounds)]
            row = {"setup": setup, "path": path, "burst": args.burst, "rounds": len(runs)}
            for key in runs[0]:
                found = [r[key] for r in runs if r[key] is not None]
                row[key] = round(median(found), 3) if found else None
            row["each_round"] = runs
            rows.append(row)
    return rows


def burst_vs_quiet(args, setup: str, path: str) -> dict:
    """One round of scenario a: the quiet academy's waits behind the burst."""
    reset_jobs()
    loud, quiet = make_tenant("붐비는 학원"), make_tenant("조용한 학원")
    procs = plain_worker() if setup == "plain" else jobq_run_workers()
    try:
        wait_ready(procs)
        burst(path, loud, args.burst, SLEEP, {"seconds": args.burst_seconds})
        time.sleep(1.0)
        from app.tasks.dispatch import dispatch_intent

        calls = []
        for _ in range(10):
            calls.append((time.time(), dispatch_intent.delay(
                tenant_id=quiet, intent_key=SLEEP, intent_params={"seconds": 0})))
            time.sleep(0.3)
        ids = [r.get(timeout=args.timeout) for _, r in calls]
        wait_finished(ids, args.timeout)
        # From the caller's dispatch_intent call to the run's start.
        started = dict(sql("SELECT id::text, extract(epoch FROM executed_at) FROM "
                           "job_executions WHERE id = ANY(CAST(:ids AS uuid[]))", ids=ids))
        w = [float(started[i]) - t for (t, _), i in zip(calls, ids, strict=True)]
        pw = publish_waits(ids)
        [(left,)] = sql("SELECT count(*) FROM job_executions WHERE tenant_id = "
                        "CAST(:t AS uuid) AND status = 'pending'", t=loud)
    finally:
        stop_all(procs)
    row = {"quiet_wait_max_s": round(max(w), 3), "quiet_wait_p50_s": round(median(w), 3),
           "quiet_until_published_max_s": round(max(pw), 3) if pw else None,
           "burst_left_when_quiet_done": left}
    print(f"a {setup:>8} {path:>8}: quiet worst wait {row['quiet_wait_max_s']:.2f} s "
          f"(p50 {row['quiet_wait_p50_s']:.2f} s), burst left {left}", flush=True)
    return row


# --- b ----------------------------------------------------------------------------------------

def scenario_b(args) -> dict:
    """A big broadcast, then another academy's 20-guardian one, on KakaoTalk through a fake
    provider at ``--rate`` messages per clock second (bench/provider.py; ``--b-channel record``:
    the record channel at that rate, as before issue 25)."""
    import resource

    from bench.broadcast import seed, submit
    from bench.cpu import CpuSampler, postmaster_pid, redis_pid
    from bench.provider import Provider

    reset_jobs()
    big, small = make_tenant("큰 학원"), make_tenant("작은 학원")
    seed(big, args.guardians)
    seed(small, 20)
    provider = (Provider(int(args.rate), latency=args.provider_latency)
                if args.b_channel == "provider" else None)
    # The workers' channel rate (theirs only: this process's environment is left alone).
    worker_env = provider.env() if provider else {"JOBQ_SEND_RATES": f"record={args.rate:g}"}
    if args.notify_concurrency:
        worker_env["JOBQ_NOTIFY_CONCURRENCY"] = str(args.notify_concurrency)
    procs = jobq_run_workers(worker_env)
    # CPU of the bulk worker (its processes send the chunks), PostgreSQL and Redis; and of
    # this process (the fake provider answers in it).
    sampler = CpuSampler([p.popen.pid for p in procs if p.name.startswith("bulk")],
                         postmaster=postmaster_pid(), redis=redis_pid(), database=env.DB_NAME)
    sampler.start()
    try:
        time.sleep(2)
        message = {"title": "설 연휴 휴원 안내", "chunk_size": args.chunk_size,
                   "message": "2월 16일부터 18일까지 설 연휴로 휴원합니다."}
        own0, load0 = resource.getrusage(resource.RUSAGE_SELF), _load()
        big_t0 = time.time()
        big_job = submit(big, "communication.exec.broadcast", message)
        time.sleep(args.small_after)
        t0 = time.time()
        small_job = submit(small, "communication.exec.broadcast", message)
        wait_finished([small_job], args.timeout)
        small_s = time.time() - t0
        wait_finished([big_job], args.timeout)
        chunks = [r[0] for r in sql("SELECT id::text FROM job_executions "
                                    "WHERE parent_id = CAST(:j AS uuid)", j=big_job)]
        wait_finished(chunks, args.timeout)
        big_t1, load1 = time.time(), _load()
        own1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        sampler.stop()
        stop_all(procs)
        if provider is not None:
            provider.stop()
    cpu = sampler.between(big_t0, big_t1)
    cpu["bench_and_provider"] = round(own1.ru_utime + own1.ru_stime
                                      - own0.ru_utime - own0.ru_stime, 3)
    [(sent, first, last)] = sql(
        "SELECT count(*), min(sent_at), max(sent_at) FROM notifications "
        "WHERE tenant_id = CAST(:t AS uuid) AND status = 'sent'", t=big)
    span = (last - first).total_seconds()
    row = {"guardians": args.guardians, "chunk_size": args.chunk_size, "rate": args.rate,
           "channel": args.b_channel, "small_dispatched_after_s": args.small_after,
           "small_done_s": round(small_s, 2), "big_messages": sent,
           "big_messages_per_s": round(sent / span, 1) if span else None,
           "provider_latency_s": args.provider_latency,
           "notify_concurrency": args.notify_concurrency or "default",
           "load_1m_at_start_and_end": [load0, load1],
           # Load-independent figures: CPU seconds over the big broadcast and per message sent
           # (bulk: the bulk worker's processes; bench_and_provider: this process).
           "cpu_s": cpu,
           "cpu_ms_per_message": {k: round(v * 1000 / (sent + 20), 3) for k, v in cpu.items()
                                  if k != "window_s"}}
    # Where the small one's time went: its jobs' events and its messages, after the dispatch.
    row["small_timeline"] = [
        (kind, round(at - t0, 2)) for kind, at in sql(
            "SELECT j.intent_key || ' ' || e.kind, extract(epoch FROM e.at)::float8 "
            "FROM job_events e JOIN job_executions j ON j.id = e.job_id "
            "WHERE j.tenant_id = CAST(:s AS uuid) UNION ALL "
            "SELECT 'message sent', extract(epoch FROM max(sent_at))::float8 FROM notifications "
            "WHERE tenant_id = CAST(:s AS uuid) UNION ALL "
            "SELECT intent_key || ' published', extract(epoch FROM published_at)::float8 "
            "FROM job_executions WHERE tenant_id = CAST(:s AS uuid) "
            "AND published_at IS NOT NULL ORDER BY 2", s=small)]
    print(f"b: the small one's timeline: {row['small_timeline']}", flush=True)
    if provider is None:  # the record channel: its rows' sent_at seconds stand for arrivals
        per_second = [n for (n,) in sql(
            "SELECT count(*) FROM notifications WHERE tenant_id IN (CAST(:b AS uuid), "
            "CAST(:s AS uuid)) AND status = 'sent' GROUP BY date_trunc('second', sent_at)",
            b=big, s=small)]
        row.update({"record_seconds_over_rate": sum(1 for n in per_second if n > args.rate),
                    "record_busiest_second": max(per_second, default=0)})
    if provider is not None:
        seen, small_seen = provider.figures(), provider.figures("작은 학원")
        row.update({
            "small_last_message_s": round(small_seen["last"] - t0, 2)
            if small_seen["messages"] else None,
            "provider_messages": seen["messages"], "provider_refused_429": seen["refused"],
            "provider_seconds_over_rate": seen["seconds_over_rate"],
            "provider_busiest_second": seen["busiest_second"],
            "provider_rate_used": seen["rate_used"]})
        print(f"b: the provider saw {seen['messages']} messages, {seen['refused']} answered 429, "
              f"{seen['seconds_over_rate']} second(s) over {args.rate:g}/s (busiest "
              f"{seen['busiest_second']}), {seen['rate_used']:.1%} of the rate used", flush=True)
    print(f"b: the 20-guardian broadcast took {small_s:.2f} s while the {args.guardians}-guardian "
          f"one ran at {row['big_messages_per_s']} messages/s", flush=True)
    print(f"b: CPU ms per message: {row['cpu_ms_per_message']} (load {load0} -> {load1})",
          flush=True)
    return row


# --- g ----------------------------------------------------------------------------------------

def scenario_g(args) -> dict:
    """Shares of the channel through the fake provider: weights 1, 1, 2; then a 10/s cap."""
    return {"weights": _shares_round(args, [("가 학원", 1.0, None), ("나 학원", 1.0, None),
                                            ("다 학원", 2.0, None)]),
            "cap": _shares_round(args, [("상한 학원", 1.0, 10.0), ("라 학원", 1.0, None),
                                        ("마 학원", 1.0, None)])}


def _shares_round(args, academies: list[tuple[str, float, float | None]]) -> dict:
    """Each academy broadcasts to guardians in proportion to its expected share (so that all
    would finish together); what the provider saw in the whole seconds all of them sent."""
    from app.intake.actions import set_channel_limits, set_tenant_limits
    from bench.broadcast import seed, submit
    from bench.provider import Provider

    reset_jobs()
    rate = int(args.rate)
    # (the caps here are below the capped academy's weighted share: no further water-filling)
    capped = {name: cap for name, _, cap in academies if cap is not None}
    left = rate - sum(capped.values())
    weights = sum(w for name, w, _ in academies if name not in capped)
    expected = {name: capped.get(name, left * w / weights) for name, w, _ in academies}
    ids = {}
    for name, weight, cap in academies:
        ids[name] = make_tenant(name)
        if weight != 1.0:
            set_tenant_limits(ids[name], weight=weight, by="bench")
        if cap is not None:
            set_channel_limits(ids[name], "kakao", rate=cap, by="bench")
        seed(ids[name], max(20, round(args.g_seconds * expected[name])))
    provider = Provider(rate, latency=args.provider_latency)
    if args.g_bulk:
        from bench.broadcast import start_workers

        procs = start_workers(args.g_bulk, provider.env())
    else:
        procs = jobq_run_workers(provider.env())
    try:
        time.sleep(2)
        message = {"title": "학부모 상담 주간 안내", "chunk_size": args.chunk_size,
                   "message": "다음 주는 학부모 상담 주간입니다."}
        jobs = [submit(ids[name], "communication.exec.broadcast", message)
                for name, _, _ in academies]
        wait_finished(jobs, args.timeout)
        chunks = [r[0] for r in sql("SELECT id::text FROM job_executions "
                                    "WHERE parent_id = ANY(CAST(:j AS uuid[]))", j=jobs)]
        wait_finished(chunks, args.timeout)
    finally:
        stop_all(procs)
        provider.stop()
    per = {name: provider.per_second(f"[{name}]") for name, _, _ in academies}
    inner = list(range(max(min(c) for c in per.values()) + 1, min(max(c) for c in per.values())))
    quota_seconds = _quota_seconds("kakao", {ids[name]: name for name in ids}, set(inner))
    got = {name: sum(per[name][s] for s in inner) for name in per}
    total = sum(got.values())
    row: dict[str, Any] = {
        "seconds_all_sending": len(inner), "rate": rate,
        "bulk_processes": args.g_bulk or "as jobq run starts them",
        "used_while_all_sending": round(total / (rate * len(inner)), 4) if inner else None,
        "provider_refused_429": provider.refused,
        "provider_busiest_second": provider.busiest_second(),
        "academies": {name: {
            "weight": weight, "cap": cap, "expected_per_s": round(expected[name], 2),
            "got_per_s": round(got[name] / len(inner), 2) if inner else None,
            "error_vs_expected": round(got[name] / len(inner) / expected[name] - 1, 4)
            if inner else None,
            "busiest_second": max(per[name].values(), default=0)}
            for name, weight, cap in academies}}
    row["quota"] = _quota_summary(quota_seconds, [name for name, _, _ in academies])
    row["quota_seconds"] = {s: {n: a["t"] for n, a in quota_seconds[s].items()}
                            for s in sorted(quota_seconds)}
    print(f"g: the quota's seconds: {json.dumps(row['quota'], ensure_ascii=False)}", flush=True)
    shares = ", ".join(f"{n} {a['got_per_s']}/s (expected {a['expected_per_s']:g}, "
                       f"{a['error_vs_expected']:+.1%}, busiest {a['busiest_second']})"
                       for n, a in row["academies"].items())
    print(f"g: {len(inner)} s with all sending: {shares}; "
          f"{row['used_while_all_sending']:.1%} of {rate}/s used, {provider.refused} × 429, "
          f"busiest second {row['provider_busiest_second']}", flush=True)
    return row


def _quota_seconds(channel: str, names: dict[str, str], seconds: set[int]) -> dict[int, dict]:
    """The quota script's own record of each second in ``seconds`` (its history list): per
    academy the messages granted (``t``), granted after OPEN_AT (``b``), granted while one, two
    or three academies were sending (``p1``-``p3``), its asks (``a``) and whether it counted as
    sending (``in``)."""
    from app.run.quota import keys_of

    found: dict[int, dict] = {}
    for raw in redis_client().lrange(keys_of(channel)[4], 0, -1):
        flat = json.loads(raw)
        entry = dict(zip(flat[::2], flat[1::2], strict=True))
        at = int(entry.get("at", -1))
        if at not in seconds or at in found:
            continue
        found[at] = {names[t]: {part: int(entry.get(f"{part}:{t}", 0))
                                for part in ("t", "b", "p1", "p2", "p3", "a", "in")}
                     for t in names}
    return found


def _quota_summary(seconds: dict[int, dict], names: list[str]) -> dict[str, Any]:
    """What the quota granted each academy while all sent, split by the seconds in which all
    of them asked (the quota saw them all) and those in which some did not."""
    all_asked = [s for s in seconds.values() if all(s[n]["a"] for n in names)]
    some_not = [s for s in seconds.values() if not all(s[n]["a"] for n in names)]
    out: dict[str, Any] = {"seconds_recorded": len(seconds),
                           "seconds_all_asked": len(all_asked),
                           "seconds_some_not_asking": len(some_not)}
    for label, group in (("all_asked", all_asked), ("some_not_asking", some_not)):
        out[label] = {n: {"granted_per_s": round(sum(s[n]["t"] for s in group) / len(group), 2)
                          if group else None,
                          "after_open_at_per_s": round(sum(s[n]["b"] for s in group)
                                                       / len(group), 2) if group else None,
                          "seconds_not_asking": sum(1 for s in group if not s[n]["a"]),
                          # granted while 1 / 2 / 3 academies were sending (its share then)
                          "granted_with_1_2_3_sending": [sum(s[n][f"p{k}"] for s in group)
                                                         for k in (1, 2, 3)]}
                      for n in names}
    return out


# --- c ----------------------------------------------------------------------------------------

def scenario_c(args) -> dict:
    from app.intake.actions import set_tenant_limits

    reset_jobs()
    heavy, light = make_tenant("가중치 2 학원"), make_tenant("가중치 1 학원")
    set_tenant_limits(heavy, weight=2, by="bench")
    procs = plain_worker()
    try:
        wait_ready(procs)
        burst("submit", heavy, args.shares_jobs, SLEEP, {"seconds": 0.01})
        burst("submit", light, args.shares_jobs, SLEEP, {"seconds": 0.01})
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:  # until the heavy tenant's backlog is gone
            [(left,)] = sql("SELECT count(*) FROM job_executions WHERE tenant_id = "
                            "CAST(:t AS uuid) AND status = 'pending'", t=heavy)
            if left == 0:
                break
            time.sleep(0.2)
    finally:
        stop_all(procs)
    # While both had a backlog: the jobs started before the heavy one's last start.
    [(h, lt)] = sql(
        "WITH cut AS (SELECT max(executed_at) AS at FROM job_executions "
        "WHERE tenant_id = CAST(:h AS uuid)) "
        "SELECT count(*) FILTER (WHERE tenant_id = CAST(:h AS uuid)), "
        "count(*) FILTER (WHERE tenant_id = CAST(:l AS uuid)) FROM job_executions, cut "
        "WHERE executed_at <= cut.at", h=heavy, l=light)
    ratio = h / lt if lt else float("inf")
    row = {"jobs_each": args.shares_jobs, "heavy_started": h, "light_started": lt,
           "realised_ratio": round(ratio, 3), "error_vs_2": round(abs(ratio - 2) / 2, 3)}
    print(f"c: weights 2:1 realised {h}:{lt} = {ratio:.2f} (error {row['error_vs_2']:.1%})",
          flush=True)
    return row


# --- d ----------------------------------------------------------------------------------------

def pick_cost(tenants_waiting: int, repeats: int = 20, n: int = 64) -> float:
    """Milliseconds per job of the fair pick with ``tenants_waiting`` tenants ready (a queue
    no worker consumes, rolled back each time)."""
    from sqlalchemy import text

    from app.store import db

    sql("DELETE FROM fair_queue WHERE queue = 'fairbench'")
    sql("DELETE FROM job_executions WHERE queue = 'fairbench'")
    sql("INSERT INTO tenants (name) SELECT '벤치 학원 ' || i FROM generate_series(1, :n) i",
        n=max(0, tenants_waiting - int(sql("SELECT count(*) FROM tenants")[0][0])))
    sql("INSERT INTO job_executions (tenant_id, intent_key, queue) "
        "SELECT id, :k, 'fairbench' FROM (SELECT id FROM tenants ORDER BY id LIMIT :n) t, "
        "generate_series(1, 3)", k=ECHO, n=tenants_waiting)
    sql("ANALYZE job_executions")
    sql("ANALYZE fair_queue")
    times = []
    with db.engine().connect() as conn:
        for _ in range(repeats):
            with conn.begin() as tx:
                t0 = time.perf_counter()
                got = conn.execute(text("SELECT count(*) FROM jobq_feed('fairbench', :n)"),
                                   {"n": n}).scalar_one()
                times.append((time.perf_counter() - t0) / got * 1000)
                tx.rollback()
    sql("DELETE FROM job_executions WHERE queue = 'fairbench'")
    sql("DELETE FROM fair_queue WHERE queue = 'fairbench'")
    return round(median(times), 4)


def scenario_d(args) -> dict:
    reset_jobs()
    costs = {str(n): pick_cost(n) for n in (10, 1_000, 10_000)}
    print(f"d: pick cost per job (ms) by tenants waiting: {costs}", flush=True)
    reset_jobs()
    sql("INSERT INTO tenants (name) SELECT '백로그 학원 ' || i FROM generate_series(1, :n) i",
        n=max(0, args.tenants - int(sql("SELECT count(*) FROM tenants")[0][0])))
    sql("INSERT INTO job_executions (tenant_id, intent_key, queue, intent_params) "
        "SELECT id, :k, 'realtime', '{\"seconds\": 0.005}' FROM "
        "(SELECT id FROM tenants ORDER BY id LIMIT :n) t, generate_series(1, 3)",
        k=SLEEP, n=args.tenants)
    newcomer = make_tenant("새 학원")
    procs = plain_worker()
    try:
        wait_ready(procs)
        time.sleep(3)
        ids = [dispatch(newcomer, SLEEP, {"seconds": 0}) for _ in range(1)]
        wait_finished(ids, args.timeout)
        w, pw = waits(ids), publish_waits(ids)
        [(left,)] = sql("SELECT count(*) FROM job_executions WHERE status = 'pending'")
    finally:
        stop_all(procs)
    row = {"tenants_with_backlog": args.tenants, "jobs_each": 3, "newcomer_wait_s": round(max(w), 3),
           "newcomer_until_published_s": round(max(pw), 3) if pw else None,
           "pending_when_newcomer_done": left, "pick_ms_per_job": costs,
           "pick_cost_ratio_10000_vs_10": round(costs["10000"] / costs["10"], 2)}
    print(f"d: newcomer waited {row['newcomer_wait_s']:.2f} s (published after "
          f"{row['newcomer_until_published_s']} s) with {left} jobs of "
          f"{args.tenants} tenants pending", flush=True)
    return row


# --- e ----------------------------------------------------------------------------------------

def scenario_e(args) -> list[dict]:
    from bench import drain
    from bench.drain import run_one

    tenant = make_tenant()
    rows = []
    for path in args.e_paths.split(","):
        if path == "stock" and "stock" not in getattr(drain, "BROKER_PATHS", {}):
            print("e stock: this checkout's bench.drain has no stock path; skipped", flush=True)
            continue
        for _ in range(args.repeats):
            r = run_one(path, "prefork2", args.drain_jobs, tenant, args.timeout)
            rows.append(r)
            print(f"e {path:>8}: {r['jobs_per_s']:,.0f} jobs/s", flush=True)
    return rows


# --- f ----------------------------------------------------------------------------------------

def scenario_f(args) -> dict:
    reset_jobs()
    client = redis_client()
    client.execute_command("MEMORY PURGE")
    base_mb = client.info("memory")["used_memory"] / 2**20
    tenant = make_tenant()
    t0 = time.time()
    if has_fairness():  # as submit_many writes them, into the table
        sql("INSERT INTO job_executions (tenant_id, intent_key, intent_params, queue) "
            "SELECT CAST(:t AS uuid), :k, jsonb_build_object('i', i), 'realtime' "
            "FROM generate_series(1, :n) i", t=tenant, k=ECHO, n=args.pending)
    else:
        burst("submit", tenant, args.pending, ECHO, {})
    insert_s = time.time() - t0
    procs = plain_worker()
    samples = []
    try:
        wait_ready(procs)
        for _ in range(int(args.f_seconds)):
            info = client.info("memory")["used_memory"] / 2**20
            samples.append((round(info - base_mb, 2), client.llen(env.KEY_PREFIX + "realtime")))
            time.sleep(1)
    finally:
        stop_all(procs)
    row = {"pending": args.pending, "insert_s": round(insert_s, 1),
           "redis_mb_above_idle_max": max(s[0] for s in samples),
           "messages_max": max(s[1] for s in samples), "samples": samples}
    print(f"f: {args.pending:,} pending: Redis at most {row['redis_mb_above_idle_max']:.1f} MB "
          f"above idle, at most {row['messages_max']} messages in the queue", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench fairness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="a,b,c,d,e,f,g")
    parser.add_argument("--label", default="after")
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--burst-seconds", type=float, default=0.03,
                        help="run time of each burst job (s)")
    parser.add_argument("--a-setups", default="plain,jobq-run")
    parser.add_argument("--a-paths", default="sql,dispatch,submit")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of scenario a; its figures are the medians")
    parser.add_argument("--guardians", type=int, default=10_000)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--rate", type=float, default=50, help="the channel's messages/s (b)")
    parser.add_argument("--small-after", type=float, default=5.0)
    parser.add_argument("--b-channel", choices=("provider", "record"), default="provider",
                        help="b: KakaoTalk to a fake provider, or the record channel")
    parser.add_argument("--provider-latency", type=float, default=0.0,
                        help="b: seconds the fake provider takes to answer each message "
                             "(a real gateway is tens of milliseconds away)")
    parser.add_argument("--notify-concurrency", type=int, default=0,
                        help="b: the workers' JOBQ_NOTIFY_CONCURRENCY (0: their default)")
    parser.add_argument("--g-seconds", type=float, default=40,
                        help="g: seconds of messages each academy has at its expected share")
    parser.add_argument("--g-bulk", type=int, default=0,
                        help="g: bulk worker processes (0: as jobq run starts them, 2)")
    parser.add_argument("--shares-jobs", type=int, default=600)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--drain-jobs", type=int, default=5000)
    parser.add_argument("--e-paths", default="stock,bare,submit,sql,dispatch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--f-seconds", type=float, default=15)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    fair = has_fairness()
    out: dict[str, Any] = {"label": args.label, "fair_scheduling": fair}
    for s in args.scenarios.split(","):
        if s in ("c", "d") and not fair:
            print(f"{s}: needs fair scheduling; skipped", flush=True)
            continue
        out[s] = globals()[f"scenario_{s}"](args)
    if "a" in out:
        print_table(f"a. quiet tenant's worst wait behind a {args.burst:,}-job burst ({args.label}"
                    f", median of {args.rounds} round(s))",
                    ["set-up", "burst path", "worst wait s", "p50 s"],
                    [(r["setup"], r["path"], r["quiet_wait_max_s"], r["quiet_wait_p50_s"])
                     for r in out["a"]])
        out["targets"] = targets([
            (f"quiet academy's worst wait behind a {args.burst:,}-request dispatch_intent "
             f"burst, {r['setup']}, s", r["quiet_wait_max_s"], "≤ 2 s (stretch 0.5 s)")
            for r in out["a"] if r["path"] == "dispatch"])
    if isinstance(out.get("b"), dict) and "provider_refused_429" in out["b"]:
        b = out["b"]
        out["targets"] = [*out.get("targets", []), *targets([
            (f"20-guardian broadcast's completion after dispatch, beside a {b['guardians']:,}-"
             "guardian one, s", b["small_done_s"], "≤ 5 s"),
            ("provider: seconds over its rate", b["provider_seconds_over_rate"], "0"),
            ("provider: messages answered 429", b["provider_refused_429"], "0"),
            ("provider: rate used while messages wait", b["provider_rate_used"], "≥ 95%")])]
    if isinstance(out.get("g"), dict):
        g = out["g"]
        out["targets"] = [*out.get("targets", []), *targets([
            *((f"weights 1:1:2, {name}'s share vs its weight's", a["error_vs_expected"],
               "within ±10%") for name, a in g["weights"]["academies"].items()),
            ("an academy capped at 10/s: its busiest second",
             g["cap"]["academies"]["상한 학원"]["busiest_second"], "≤ 10"),
            ("the cap's unused share: the rate used while all three sent",
             g["cap"]["used_while_all_sending"], "≥ 95%"),
            ("provider: messages answered 429 (both rounds)",
             g["weights"]["provider_refused_429"] + g["cap"]["provider_refused_429"], "0")])]
    if "e" in out:
        by: dict[str, list[float]] = {}
        for r in out["e"]:
            by.setdefault(r["path"], []).append(r["jobs_per_s"])
        out["e_median"] = {p: median(v) for p, v in by.items()}
        ratio = {base: {p: round(m / out["e_median"][base], 3) for p, m in out["e_median"].items()}
                 for base in ("stock", "bare") if base in out["e_median"]}
        out["e_ratio_vs_stock"] = ratio.get("stock", {})
        out["e_ratio_vs_bare"] = ratio.get("bare", {})
        print_table(f"e. one tenant alone, {args.drain_jobs:,} jobs, prefork -c 2 ({args.label}; "
                    "stock: -c cores -E)",
                    ["path", "median jobs/s", "× stock", "× bare", "runs"],
                    [(p, median(v), out["e_ratio_vs_stock"].get(p, "-"),
                      out["e_ratio_vs_bare"].get(p, "-"), ", ".join(f"{x:.0f}" for x in v))
                     for p, v in by.items()])
    path = write_result(f"fairness-{args.label}", out)
    print(f"written {path}")


if __name__ == "__main__":
    main()
