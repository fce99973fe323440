"""The benchmarks' latest figures as one Markdown page and one chart, from their JSON files.

    python -m bench report      # writes bench/results/README.md and bench/results/chart.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _when(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    load = m.get("load_avg_1m", m.get("load_avg_1m_at_start", "?"))
    return (f"_{m.get('at', '?')}, {m.get('cpus', '?')} CPUs, 1-minute load {load} when "
            f"written, Python {m.get('python', '?')}_")


def markdown() -> str:
    out = ["# Benchmark results", "",
           "Written by `python -m bench report` from the JSON files beside it; each section names "
           "the command that produced it. Ratios compare runs made in one invocation.", ""]
    found = [(path.stem, t) for path in sorted(RESULTS.glob("*.json"))
             for t in json.loads(path.read_text()).get("targets") or []]
    if found:
        out += ["## Issue 24 figures", "", "Each result file's figures for issue 24's targets "
                "(docs/benchmarks.md gives the command of each); a file named `-before` / "
                "`-after` is that side of the redesign.", "",
                _table(["file", "figure", "measured", "target"],
                       [[name, t["figure"], "-" if t["value"] is None else t["value"],
                         t["target"]] for name, t in found]), ""]
    for name in sorted(p.stem for p in RESULTS.glob("academies*.json")):
        ac = _load(name)
        table = f"{ac['rows']:,} finished jobs in the table" if ac["rows"] else "an empty table"
        out += [f"## Many academies: {table}", "", f"`python -m bench academies` — "
                f"{ac['jobs']:,} `{ac['path']}` jobs drained on the `{ac['setup']}` set-up (with "
                f"beat), all in one academy and spread over {ac['academies']:,}; medians of "
                f"{ac['rounds']} round(s), the ratio taken within each. " + _when(ac), "",
                _table(["academies", "jobs/s", "× one academy"],
                       [[1, ac["one_jobs_per_s"], 1.0],
                        [ac["academies"], ac["many_jobs_per_s"], ac["ratio"]]]), ""]
    if drain := _load("drain"):
        stock_worker = drain.get("stock_worker", "celery -A bench.stock worker -c 2 -E")
        out += ["## Drain throughput", "", f"`python -m bench drain` — {drain['jobs']:,} jobs of "
                "`system.exec.echo` enqueued first, then the workers started. `stock` is Celery "
                f"as people run it (`{stock_worker}`, bench/stock.py), run in every set-up's "
                "group; `bare` is jobq's own Celery settings with a no-op task on the set-up's "
                "workers. Ratios: × stock of the same group, × bare of the same set-up. CPU is "
                "machine CPU per job over the drain, split by process (bench/cpu.py says how); "
                "\"+ asking\" adds what enqueueing cost (the caller, PostgreSQL, Redis): a job's "
                "CPU end to end. Figures are medians of the rounds run (`--rounds`). "
                + _when(drain), "",
                _table(["set-up", "path", "jobs/s", "× stock", "× bare, same set-up",
                        "CPU ms/job: worker", "PostgreSQL", "Redis", "total",
                        "CPU total × bare", "+ asking, ms/job", "× bare"],
                       [[r["setup"], r["path"], r["jobs_per_s"], r.get("ratio_vs_stock", "-"),
                         r.get("ratio_vs_bare_same_setup", "-"),
                         *(r.get("cpu_ms_per_job", {}).get(g, "-")
                           for g in ("worker", "postgres", "redis", "total")),
                         r.get("cpu_ratio_vs_bare_same_setup", "-"),
                         r.get("end_to_end_cpu_ms_per_job", "-"),
                         r.get("end_to_end_cpu_ratio_vs_bare_same_setup", "-")]
                        for r in drain["runs"]]), ""]
    if pub := _load("publish"):
        out += ["## Publish rate", "", "`python -m bench publish` — calls from one process; "
                "`stock apply_async` is Celery's defaults (bench/stock.py), `bare apply_async` "
                "jobq's Celery settings. " + _when(pub), "",
                _table(["way", "jobs/s", "× stock apply_async", "× bare apply_async"],
                       [[r["way"], r["per_s"], r.get("ratio_vs_stock", "-"), r["ratio_vs_bare"]]
                        for r in pub["runs"]]), ""]
    if api := _load("api"):
        out += ["## HTTP API", "", f"`python -m bench api` — `POST /v1/jobs` from "
                f"{api['clients']} keep-alive clients against `jobq api` "
                f"({api['api_workers']} process), beside `submit` committing each in one process; "
                f"then {api['latency_rate']:g} requests/s for {api['latency_seconds']:g} s. "
                + _when(api), "",
                _table(["way", "jobs/s", "× submit"],
                       [["POST /v1/jobs", api["api_per_s"], api["ratio_vs_submit"]],
                        ["submit, commit each", api["submit_per_s"], 1.0]]), "",
                _table(["at", "p50 ms", "p99 ms", "max ms"],
                       [[f"{api['latency_rate']:g} requests/s", api["p50_ms"], api["p99_ms"],
                         api["max_ms"]]]), ""]
    for name, what in (("streams-before", "before the shared watcher (each stream polling "
                                           "the table on its own)"),
                       ("streams", "the shared watcher")):
        if found := _load(name):
            out += [f"## Open event streams: {what}", "",
                    "`python -m bench streams` — N open `GET /v1/jobs/{id}/events` streams of one "
                    "key, each on its own job awaiting approval, against one `jobq api` process "
                    "and no worker: the benchmark database's transactions/s "
                    f"(`pg_stat_database`) over {found['seconds']:g} s, then "
                    f"{found['requests']} sequential `GET /v1/jobs`; then 20 of the watched jobs "
                    "cancelled one at a time, from the request to its stream's `end` frame. "
                    + _when(found), "",
                    _table(["streams", "tx/s", "api CPU %", "GET p50 ms", "GET p99 ms",
                            "change → frame p50 ms", "max ms"],
                           [[r["streams"], r["tx_per_s"], r["api_cpu_pct"], r["p50_ms"],
                             r["p99_ms"], r.get("change_p50_ms", "-"),
                             r.get("change_max_ms", "-")] for r in found["runs"]]), ""]
    if lat := _load("latency"):
        out += ["## Latency at light load", "", f"`python -m bench latency` — {lat['rate']:g} "
                f"jobs/s for {lat['seconds']:g} s on the `jobq run` worker set-up (`stock`, if listed: "
                "`celery -A bench.stock worker -c <cores> -E` alone, times from its task "
                "events). " + _when(lat), "",
                _table(["path", "→ processing p50 ms", "p99 ms", "→ completed p50 ms", "p99 ms",
                        "p50 × stock", "p99 × stock"],
                       [[r["path"], r["start_p50_ms"], r["start_p99_ms"], r["done_p50_ms"],
                         r["done_p99_ms"], r.get("done_p50_ms_vs_stock", "-"),
                         r.get("done_p99_ms_vs_stock", "-")] for r in lat["runs"]]), ""]
    if cold := _load("coldstart"):
        out += ["## Cold start", "", "`python -m bench coldstart` — worker spawn to the first job "
                "completed, and the worker's RSS (parent and pool child) after it. " + _when(cold), "",
                _table(["case", "first job (s)", "RSS (MiB)"],
                       [[c["case"], c["first_job_s"], c["rss_mib"]] for c in cold["cases"]]), ""]
        if "ratio_vs_bare" in cold:
            out += [f"Real manifest over bare Celery: ×{cold['ratio_vs_bare']}.", ""]
        if "start_ratio_big_vs_small" in cold:
            out += [f"Largest vs smallest lazy manifest: start ×{cold['start_ratio_big_vs_small']}, "
                    f"RSS ×{cold['rss_ratio_big_vs_small']} (target: within ×1.10).", ""]
    if bc := _load("broadcast"):
        out += ["## Broadcast", "", f"`python -m bench broadcast` — {bc['guardians']:,} guardians, "
                f"record channel, chunks of {bc['chunk_size']}. " + _when(bc), "",
                _table(["set-up", "bulk processes", "seconds", "messages/s", "sent twice",
                        "late notice wait p50 ms", "max ms", "idle p50 ms"],
                       [[r["setup"], r["bulk_processes"], r["seconds"], r["messages_per_s"],
                         r["sent_twice"], r["late_wait_p50_ms"], r["late_wait_max_ms"],
                         r["late_idle_wait_p50_ms"]] for r in bc["runs"]]), ""]
    if ro := _load("roster"):
        out += ["## Roster import", "", f"`python -m bench roster` — {ro['rows']:,} rows in batches "
                f"of {ro['batch_size']}. " + _when(ro), "",
                _table(["status", "seconds", "rows/s", "imported", "bad rows reported",
                        "late notice wait p50 ms", "max ms", "idle p50 ms"],
                       [[ro["status"], ro["seconds"], ro["rows_per_s"], ro["students_imported"],
                         ro["bad_rows_reported"], ro["late_wait_p50_ms"], ro["late_wait_max_ms"],
                         ro["late_idle_wait_p50_ms"]]]), ""]
    if soak := _load("soak"):
        st = soak["statuses"]
        out += ["## Soak under faults", "", f"`python -m bench soak` — {soak['sent']:,} jobs of "
                f"mixed intents (fast, slow, flaky, failing by design) kept flowing, a fault every "
                f"{soak['settings']['fault_every_s']:g} s. " + _when(soak), "",
                f"{soak['total_s']:,.0f} s in all: {st.get('completed', 0):,} completed, "
                f"{st.get('failed', 0):,} failed as designed, **{soak['duplicated']} duplicated, "
                f"{soak['stuck']} stuck**, {soak['lost_attempts']} lost attempts retried; "
                "processes that died on their own: "
                f"{len(soak['processes_that_died_on_their_own'])}.", "",
                _table(["fault", "times", "jobs sent meanwhile", "completed", "failed as designed",
                        "duplicated", "stuck", "recovered median s", "max s"],
                       [[kind, f["times"], f["sent"], f["completed"], f["failed_as_expected"],
                         f["duplicated"], f["stuck"], f.get("recovered_s_median", "-"),
                         f.get("recovered_s_max", "-")]
                        for kind, f in soak["faults_by_kind"].items()]), "",
                _table(["process", "RSS early MB", "late MB", "max MB", "growth %"],
                       [[name, m["early_mb"], m["late_mb"], m["max_mb"], m["growth_pct"]]
                        for name, m in soak["memory"].items()]), ""]
    if sw := _load("sweep_latency"):
        def spread(values: list[float]) -> list[Any]:
            ordered = sorted(values)
            return [len(ordered), ordered[len(ordered) // 2], ordered[-1]] if ordered else [0, "-", "-"]

        out += ["## Sweep and recovery latency", "", "`python -m bench sweep_latency` — a row "
                "inserted by plain SQL until a worker starts it; a killed run until its next "
                "attempt. " + _when(sw), "",
                _table(["what", "samples", "median s", "max s"],
                       [["plain-SQL INSERT → processing", *spread(sw["insert_to_processing_s"])],
                        ["pool child SIGKILL → next attempt",
                         *spread(sw["child_kill_to_next_attempt_s"])],
                        ["whole worker SIGKILL → next attempt (lease "
                         f"{sw['timings']['lease_s']:g} s)",
                         *spread(sw["worker_kill_to_next_attempt_s"])]]), ""]
    if sc := _load("scale"):
        sizes = sc["sizes"]
        runs = sc["runs"]
        out += ["## Cost as the table grows", "", f"`python -m bench scale` — "
                f"{', '.join(f'{s:,}' for s in sizes)} finished jobs (and their events) in the "
                f"table, plus {sc['pending']:,} pending over {sc['tenants']:,} tenants; medians "
                f"of {sc['reps']} calls (claims: {sc['claims']}). Rows marked * are the hot path "
                "(target: at most 1.5× from the smallest to the largest table). " + _when(sc), "",
                _table(["measure", *(f"{s:,}" for s in sizes), "growth"],
                       [[label + (" *" if hot else ""), *(r.get(key, "-") for r in runs),
                         sc["growth"].get(key) if sc["growth"].get(key) is not None else "-"]
                        for label, key, hot in sc["rows"]]), ""]
        if before := sc.get("before"):
            out += [f"Before the fixes ({before['note']}):", "",
                    _table(["measure", *(f"{s:,}" for s in before["sizes"]), "growth"],
                           [[label, *(r.get(key, "-") for r in before["runs"]),
                             before["growth"].get(key) if before["growth"].get(key) is not None
                             else "-"] for label, key, _ in sc["rows"]]), ""]
        if sc.get("how"):
            out += [f"How: {sc['how']}.", ""]
    out += ["![chart](chart.png)", ""]
    return "\n".join(out)


def chart(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("drain", "publish", "latency", "coldstart") if _load(p)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, name in zip(axes, panels, strict=True):
        data = _load(name)
        if name == "drain":
            labels = [f"{r['setup']}\n{r['path']}" for r in data["runs"]]
            ax.bar(labels, [r["jobs_per_s"] for r in data["runs"]],
                   color=["#999" if r["path"] in ("bare", "stock") else "#3a7"
                          for r in data["runs"]])
            ax.set_title("Drain throughput (jobs/s)")
        elif name == "publish":
            ax.barh([r["way"] for r in data["runs"]], [r["per_s"] for r in data["runs"]],
                    color=["#999" if r["way"].startswith(("stock ", "bare ")) else "#37a"
                           for r in data["runs"]])
            ax.set_title("Publish rate (jobs/s, one process)")
        elif name == "latency":
            paths = [r["path"] for r in data["runs"]]
            ax.bar([p + "\np50" for p in paths], [r["done_p50_ms"] for r in data["runs"]],
                   color="#3a7")
            ax.bar([p + "\np99" for p in paths], [r["done_p99_ms"] for r in data["runs"]],
                   color="#a73")
            ax.set_yscale("log")
            ax.set_title("Call → completed (ms, log)")
        else:
            cases = data["cases"]
            ax.bar([c["case"].replace(" handlers, ", "\n") for c in cases],
                   [c["first_job_s"] for c in cases],
                   color=["#a73" if "eager" in c["case"] else "#3a7" for c in cases])
            ax.set_title("Cold start to first job (s)")
        ax.tick_params(axis="x", labelsize=7)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m bench report", description=__doc__).parse_args(argv)
    (RESULTS / "README.md").write_text(markdown())
    chart(RESULTS / "chart.png")
    print(f"written {RESULTS / 'README.md'} and {RESULTS / 'chart.png'}")


if __name__ == "__main__":
    main()
