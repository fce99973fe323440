"""``/metrics`` from the durable table (and beat's caretaking notes), read at each scrape: they
survive restarts of anything, unlike Flower's, which count the events it saw since it started.

Labels stay bounded however many academies there are: ``tenant`` names only the
``JOBQ_METRICS_TOP_TENANTS`` tenants with the most waiting and running jobs (the rest are summed
as ``other``); ``intent`` only the manifest's keys (any other key is ``other``); ``queue`` and
``status`` are fixed sets. Finished jobs and run times are counted over the last
``JOBQ_METRICS_WINDOW`` seconds (gauges, so they fall as jobs age out and survive retention).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator

from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.core.registry import manifest
from app.core.settings import settings
from app.store import db
from app.store import metrics as queries

OTHER = "other"


class TableCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        known = {i.key for i in manifest}
        window = settings.metrics_window_seconds
        with db.engine().connect() as conn:
            live = queries.live_jobs(conn, top=settings.metrics_top_tenants)
            oldest = queries.oldest_pending(conn)
            finished = queries.finished(conn, window=window)

        jobs = GaugeMetricFamily(
            "jobq_jobs", "Jobs waiting or running now, by state, queue and tenant (the tenants "
            "with the most such jobs; the others summed as 'other')",
            labels=["status", "queue", "tenant"])
        for row in live:
            jobs.add_metric([row["status"], row["queue"], row["tenant"]], row["n"])
        yield jobs

        age = GaugeMetricFamily("jobq_oldest_pending_age_seconds",
                                "How long the oldest due pending job of each queue has waited",
                                labels=["queue"])
        for queue, seconds in sorted(oldest.items()):
            age.add_metric([queue], max(0.0, seconds))
        yield age

        counts: dict[tuple[str, str], int] = defaultdict(int)
        buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(queries.RUN_TIME_BUCKETS))
        runs: dict[str, int] = defaultdict(int)
        sums: dict[str, float] = defaultdict(float)
        for row in finished:
            intent = row["intent_key"] if row["intent_key"] in known else OTHER
            counts[(intent, row["status"])] += row["n"]
            if row["status"] == "completed":
                runs[intent] += row["runs"]
                sums[intent] += row["run_sum"]
                for i in range(len(queries.RUN_TIME_BUCKETS)):
                    buckets[intent][i] += row[f"le_{i}"]
        done = GaugeMetricFamily(
            "jobq_jobs_finished_window",
            f"Jobs that ended in the last {window:g} s, by intent and end state",
            labels=["intent", "status"])
        for (intent, status), n in sorted(counts.items()):
            done.add_metric([intent, status], n)
        yield done

        hist = GaugeHistogramMetricFamily(
            "jobq_run_seconds_window",
            f"Run time of the jobs completed in the last {window:g} s (their last attempt)",
            labels=["intent"])
        for intent in sorted(runs):
            hist.add_metric(
                [intent],
                [(f"{b:g}", float(c)) for b, c in zip(queries.RUN_TIME_BUCKETS, buckets[intent],
                                                       strict=True)]
                + [("+Inf", float(runs[intent]))],
                gsum_value=sums[intent])
        yield hist

        yield from _caretaking()


def _caretaking() -> Iterator[Metric]:
    from app.beat.caretaking import caretaker_notes

    try:
        notes = caretaker_notes()
    except Exception:  # the broker's Redis is down: the table's metrics still count
        return
    now = time.time()
    runs = GaugeMetricFamily("jobq_caretaking_runs", "Runs of beat's caretaking tasks (sweep, "
                             "lost-run recovery, expired approvals, schedules, retention)",
                             labels=["task"])
    acted = GaugeMetricFamily("jobq_caretaking_acted", "What they did: jobs published by the "
                              "sweep, lost runs recovered, approvals expired, ...",
                              labels=["task"])
    last = GaugeMetricFamily("jobq_caretaking_last_run_age_seconds",
                             "Seconds since each caretaking task last ran", labels=["task"])
    for task, note in sorted(notes.items()):
        runs.add_metric([task], note.get("runs", 0))
        acted.add_metric([task], note.get("acted", 0))
        if "last_at" in note:
            last.add_metric([task], max(0.0, now - note["last_at"]))
    yield from (runs, acted, last)


_registry: CollectorRegistry | None = None


def registry() -> CollectorRegistry:
    global _registry
    if _registry is None:
        fresh = CollectorRegistry(auto_describe=False)
        fresh.register(TableCollector())
        _registry = fresh
    return _registry


def metrics_response() -> Response:
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)
