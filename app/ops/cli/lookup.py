"""Finding what a command names: a job by its id (or a prefix of it), a tenant by id or name.

An unknown job is the command's failure (exit 1); a tenant given as an option that does not
exist is a bad argument (exit 2).
"""

from __future__ import annotations

import re
from typing import Any

import typer

from app.ops.cli import fail
from app.ops.cli.args import bad, id_range, is_uuid
from app.store import reads, tenants


def find_job(conn, ref: str) -> dict[str, Any]:
    """The job ``ref`` names, or exit 1 saying there is none (or that the prefix is ambiguous)."""
    lo, hi = id_range(ref)
    found = reads.find_jobs_by_prefix(conn, lo, hi)
    if not found:
        raise fail(f"no job {ref}")
    if len(found) > 1:
        raise fail(f"job id prefix {ref} names more than one job: give more of it")
    return found[0]


def find_tenant(conn, ref: str, param: str = "--tenant") -> dict[str, Any]:
    """A tenant by id or by exact name; a bad argument when there is none or it is ambiguous."""
    tenant = lookup_tenant(conn, ref)
    if tenant is None:
        raise bad(f"no tenant {ref!r} (`jobq tenants` lists them)", param)
    return tenant


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
