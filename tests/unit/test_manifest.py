"""The manifest as read: every entry imports, a broken or malformed entry is named, duplicate
keys are refused."""

from __future__ import annotations

import pytest

from app.core.manifest import Intent, Manifest, ManifestError, check
from app.core.registry import manifest


def test_every_manifest_entry_imports():
    assert check(manifest) == []


def test_a_broken_entry_is_reported_by_name():
    broken = Manifest([
        Intent("system.exec.echo", "handlers.system.diagnostics:echo",
               params="handlers.system.params:EchoParams"),
        Intent("attendance.exec.typo", "handlers.system.diagnostics:ecoh"),
        Intent("billing.exec.missing_module", "handlers.nowhere:run"),
    ])
    problems = check(broken)
    assert len(problems) == 2
    assert "attendance.exec.typo: handler: module 'handlers.system.diagnostics' has no 'ecoh'" in problems
    assert any(p.startswith("billing.exec.missing_module: handler: cannot import 'handlers.nowhere'")
               for p in problems)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "Attendance.Notify"}, "must be dotted lowercase words"),
        ({"handler": "handlers.x.run"}, "must be 'module:attribute'"),
        ({"queue": "urgent"}, "queue 'urgent' is not one of"),
        ({"time_limit": 10**6}, "time_limit 1000000 must be within"),
    ],
)
def test_malformed_entries_are_refused_when_the_manifest_is_read(kwargs, message):
    fields = {"key": "system.exec.ok", "handler": "handlers.system.diagnostics:echo", **kwargs}
    with pytest.raises(ManifestError, match=message):
        Intent(fields.pop("key"), fields.pop("handler"), **fields)


def test_duplicate_keys_are_refused():
    entry = Intent("system.exec.echo", "handlers.system.diagnostics:echo")
    with pytest.raises(ManifestError, match="appears twice"):
        Manifest([entry, entry])
