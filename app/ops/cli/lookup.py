"""Finding what a command names: a job by its id (or a prefix of it), a tenant by id or name,
the jobs the shared filter options choose.

An unknown job is the command's failure (exit 1); a tenant given as an option that does not
exist is a bad argument (exit 2), one named as a command's own argument its failure (exit 1);
every command that takes a tenant finds it through :func:`find_tenant`, "did you mean" included.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from typing import Any

import typer

from app.core.validation import is_uuid
from app.ops.cli.args import bad, id_range, parse_since
from app.ops.cli.common import fail
from app.store import reads, tenants
from app.store.models import JOB_STATUSES


def find_job(conn, ref: str) -> dict[str, Any]:
    """The job ``ref`` names, or exit 1 saying there is none (or that the prefix is ambiguous)."""
    lo, hi = id_range(ref)
    found = reads.find_jobs_by_prefix(conn, lo, hi)
    if not found:
        raise fail(f"no job {ref}")
    if len(found) > 1:
        raise fail(f"job id prefix {ref} names more than one job: give more of it")
    return found[0]


def job_filter(tenant: str | None, status: list[str] | None, intent: str | None,
               since: str | None, conn, until: str | None = None) -> reads.JobFilter:
    """The filter the shared options (:mod:`app.ops.cli.common`) describe; bad values exit 2."""
    for value in status or []:
        if value not in JOB_STATUSES:
            raise bad(f"{value!r} is not one of {', '.join(JOB_STATUSES)}", "--status")
    since_seconds, since_at = parse_since(since)
    until_seconds, until_at = parse_since(until, "--until")
    if since and until:
        now = dt.datetime.now(dt.UTC)
        if (until_at or now - dt.timedelta(seconds=until_seconds or 0)) <= (
                since_at or now - dt.timedelta(seconds=since_seconds or 0)):
            raise bad(f"{until!r} is not after --since {since!r}: no job is created in that "
                      "window", "--until")
    tenant_id = find_tenant(conn, tenant)["id"] if tenant else None
    return reads.JobFilter(tenant_id=tenant_id, statuses=status or None, intent=intent,
                           since_seconds=since_seconds, since_at=since_at,
                           until_seconds=until_seconds, until_at=until_at)


def find_tenant(conn, ref: str, param: str | None = "--tenant") -> dict[str, Any]:
    """A tenant by id or by exact name. None there: a bad argument for an option (``param``,
    exit 2), the command's failure for a command's own argument (``param=None``, exit 1);
    either way the message offers the names it comes close to."""
    tenant = lookup_tenant(conn, ref)
    if tenant is None:
        message = no_tenant(conn, ref)
        raise bad(message, param) if param else fail(message)
    return tenant


def no_tenant(conn, ref: str) -> str:
    """``no tenant 'X'``, with a "did you mean" when a tenant's name comes close."""
    names = tenants.tenant_names(conn)
    # Case and spacing aside ("데모학원" for "데모 학원"), then by difflib's measure.
    folded = {"".join(n.split()).casefold(): n for n in names}
    close = difflib.get_close_matches("".join(ref.split()).casefold(), list(folded), n=3,
                                      cutoff=0.75)
    hint = f"did you mean {', '.join(repr(folded[c]) for c in close)}? " if close else ""
    return f"no tenant {ref!r} ({hint}`jobq tenants` lists them)"


def lookup_tenant(conn, ref: str) -> dict[str, Any] | None:
    """A tenant by its id, its exact name, or the first 8 or more characters of its id (as a
    narrow ``jobq tenants`` shows them)."""
    if is_uuid(ref):
        return tenants.find_tenant_by_id(conn, ref)
    named = tenants.find_tenants_by_name(conn, ref)
    if len(named) > 1:
        raise typer.BadParameter(f"more than one tenant is named {ref!r}: use its id")
    if named:
        return named[0]
    if re.fullmatch(r"[0-9a-fA-F-]{8,35}", ref):
        lo, hi = id_range(ref)
        prefixed = tenants.find_tenants_by_id_range(conn, lo, hi)
        if len(prefixed) > 1:
            raise typer.BadParameter(f"tenant id prefix {ref} names more than one tenant: "
                                     "give more of it")
        return prefixed[0] if prefixed else None
    return None
