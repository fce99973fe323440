"""`jobq retry`: one job, or every job a filter finds, runs again.

Audited: :mod:`app.store.jobstore` writes a ``requeued`` event naming who did it
(``cli:user@host``). A retried job keeps its id and history and starts over with a fresh
retry budget; it waits in its queue's fair queue like any new job (the feeder publishes it).
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from app.ops.cli.args import actor, bad, parse_params
from app.ops.cli.common import IntentOption, SinceOption, TenantOption, console, err, fail
from app.ops.cli.lookup import find_job, job_filter
from app.store import db, reads

RETRYABLE = ("failed", "cancelled")
#: Jobs requeued per transaction in a bulk retry.
BATCH = 500


def register(app: typer.Typer) -> None:
    app.command("retry")(retry)


def retry(
    job_id: Annotated[str | None, typer.Argument(
        metavar="[ID]", help="The job to run again; leave out to retry by the filters.")] = None,
    status: Annotated[list[str] | None, typer.Option(
        "--status", "-s", help="Bulk: jobs in this state (failed, cancelled); default failed.")] = None,
    intent: IntentOption = None,
    since: SinceOption = None,
    tenant: TenantOption = None,
    limit: Annotated[int, typer.Option(
        "--limit", min=1, help="Bulk: retry at most this many, oldest first.")] = 1000,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Bulk: show what would be retried, change nothing.")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", "-w", help="One job: follow it until it ends.")] = False,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", metavar="KEY=VALUE",
        help="One job: run it on this parameter instead (repeatable; as for dispatch).")] = None,
    params_json: Annotated[str | None, typer.Option(
        "--params-json", metavar="JSON",
        help="One job: run it on these parameters instead (the history keeps the old ones).")] = None,
) -> None:
    """Run failed or cancelled jobs again: one by id, or many by filter.

    Examples: `jobq retry 3f2a9c1b`, `jobq retry 3f2a9c1b --params-json '{"seconds": 2}'`,
    `jobq retry --status failed --intent billing.* --since 1h`.
    """
    bulk = any(v is not None for v in (status, intent, since, tenant))
    if job_id is not None and bulk:
        raise bad("give a job id or filters (--status/--intent/--since/--tenant), not both")
    if job_id is None and not bulk:
        raise bad("give a job id, or filters such as --status failed --since 1h")
    if job_id is not None:
        _retry_one(job_id, wait, param, params_json)
        return
    if wait:
        raise bad("--wait follows one job; it does not go with filters", "--wait")
    if param or params_json is not None:
        raise bad("new parameters go with one job id, not with filters", "--params-json")
    for value in status or []:
        if value not in RETRYABLE:
            raise bad(f"only {' and '.join(RETRYABLE)} jobs can be retried, not {value!r}",
                      "--status")
    _retry_many(status or ["failed"], intent, since, tenant, limit, dry_run)


def params_problem(job: dict[str, Any]) -> str | None:
    """Why running ``job`` again as it is cannot work (its intent is unknown here, its
    parameters were not kept, or they do not fit the intent's model), or None when a retry may
    help."""
    from app.core.errors import IntentRefused
    from app.core.registry import manifest
    from app.core.validation import validate_params

    if job.get("params_dropped"):
        return "its parameters were not kept"
    intent = manifest.get(job["intent_key"])
    if intent is None:
        return f"its intent {job['intent_key']!r} is not in this manifest"
    try:
        validate_params(intent, job["intent_params"])
    except IntentRefused as refused:
        return str(refused)
    return None


def retry_hint(job: dict[str, Any]) -> str:
    """What to type to run a failed or cancelled job again (only what can work)."""
    problem = params_problem(job)
    if problem is None:
        return f"run it again: jobq retry {job['id']}"
    if job.get("params_dropped"):
        return not_kept(job)
    if problem.startswith("its intent"):
        return f"it cannot run again as it is: {problem}"
    return (f"a retry as it is would fail again ({problem}); with corrected parameters: "
            f"jobq retry {job['id']} --params-json '{{...}}'")


def not_kept(job: dict[str, Any]) -> str:
    """Why a job whose parameters were not kept needs new ones, and how to give them."""
    from app.intake.actions import params_not_kept

    return (f"{params_not_kept(job)}. Give them all: jobq retry {job['id']} "
            "--params-json '{...}' (-p values then override it)")


def _retry_one(ref: str, wait: bool, param: list[str] | None = None,
               params_json: str | None = None) -> None:
    from app.core.errors import IntentRefused, ParamsNotKept
    from app.core.registry import manifest
    from app.core.validation import validate_params

    with db.engine().connect() as conn:
        job = find_job(conn, ref)
    if job["status"] not in RETRYABLE:
        raise fail(f"job {job['id']} is {job['status']}: only failed or cancelled jobs can be "
                   "retried")
    if job["tenant_status"] == "deleted":
        raise fail(f"job {job['id']} belongs to tenant {job['tenant_name']!r}, which is "
                   "deleted: its jobs never run again")
    if job["tenant_status"] != "active":
        raise fail(f"job {job['id']} belongs to tenant {job['tenant_name']!r}, which is "
                   f"{job['tenant_status']}: resume it first (jobq tenants resume)")
    intent = manifest.get(job["intent_key"])
    new_params = None
    if job["params_dropped"] and params_json is None:
        # -p alone would add to nothing: the fields it leaves out would take the defaults.
        raise fail(not_kept(job), 2)
    if param or params_json is not None:
        if intent is None:
            raise fail(f"job {job['id']}'s intent {job['intent_key']!r} is not in this manifest")
        schema = intent.params_model.model_json_schema()
        base = {} if params_json is not None else dict(job["intent_params"] or {})
        given = {**base, **parse_params(param or [], params_json, schema)}
        try:
            new_params = validate_params(intent, given)
        except IntentRefused as refused:
            raise fail(str(refused), 2) from None
    else:
        problem = params_problem(job)
        if problem is not None:
            raise fail(f"job {job['id']} would fail again: {problem}. "
                       f"Run it on corrected parameters: jobq retry {job['id']} "
                       "--params-json '{...}' (or -p key=value)")
    try:
        done = requeue([job], params=new_params)
    except ParamsNotKept:  # lost its parameters between the read and the requeue
        raise fail(not_kept(job), 2) from None
    if not done:  # it changed state between the read and the requeue
        raise fail(f"job {job['id']} is no longer failed or cancelled; nothing done")
    changed = " on new parameters (the old ones are in its history)" if new_params else ""
    if done[0][2] == "awaiting_approval":
        console.print(f"job {job['id']} awaits approval again{changed} (was {done[0][1]}; it "
                      f"was never approved): jobq approve {job['id'][:8]}")
        return
    console.print(f"job {job['id']} is pending again{changed} (was {done[0][1]}); "
                  "its history is kept")
    if wait:
        from app.ops.cli.watch import outcome_line, watch

        row = watch(job["id"], job["intent_key"], console)
        console.print(outcome_line(row, console.width))
        raise typer.Exit(0 if row["status"] == "completed" else 1)


def _retry_many(status: list[str], intent: str | None, since: str | None, tenant: str | None,
                limit: int, dry_run: bool) -> None:
    with db.engine().connect() as conn:
        where = job_filter(tenant, status, intent, since, conn)
        found = reads.retry_candidates(conn, where, limit=limit)
    if not found:
        err.print("no jobs match: nothing to retry")
        return
    hopeless = [j for j in found if params_problem(j) is not None]
    if hopeless:
        found = [j for j in found if j not in hopeless]
        err.print(Text(f"left out {len(hopeless)} job(s) that would fail again as they are "
                       "(unknown intent, parameters not kept or that do not fit it): `jobq job "
                       "ID` says why; retry each with --params-json", style="yellow"))
        if not found:
            return
    by_intent = Counter(j["intent_key"] for j in found)
    table = Table("intent", "jobs", box=None, header_style="bold", pad_edge=False)
    for key, count in by_intent.most_common():
        table.add_row(key, str(count))
    console.print(table)
    if dry_run:
        console.print(f"would retry {len(found)} job(s); run again without --dry-run to do it")
        return
    done = []
    for start in range(0, len(found), BATCH):
        done += requeue(found[start:start + BATCH])
    console.print(f"retried {len(done)} of {len(found)} job(s)")
    if len(found) == limit:
        err.print(Text(f"stopped at --limit {limit}; run again for more", style="yellow"))


def requeue(jobs: list[dict[str, Any]], *, params: dict[str, Any] | None = None
            ) -> list[tuple[str, str, str]]:
    """Put ``jobs`` back to pending, named as the CLI's user (app.intake.actions.requeue)."""
    from app.intake.actions import requeue as requeue_jobs

    return requeue_jobs(jobs, by=actor(), params=params)
