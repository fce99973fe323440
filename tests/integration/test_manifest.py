"""The manifest: every entry imports, a broken one is caught, and handlers load lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fixtures import ROOT, wait_for_status


def test_jobq_intents_check_exits_nonzero_on_a_broken_manifest(tmp_path):
    (tmp_path / "broken_manifest.py").write_text(
        "from app.core.manifest import Intent\n"
        "INTENTS = (Intent('system.exec.gone', 'handlers.system.diagnostics:nothing_here'),)\n"
    )
    env = {"JOBQ_MANIFEST": "broken_manifest:INTENTS", "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "app.ops.cli", "intents", "check"],
                            capture_output=True, text=True, cwd=ROOT,
                            env={**__import__("os").environ, **env})
    assert result.returncode == 1
    assert "system.exec.gone: handler: module 'handlers.system.diagnostics' has no 'nothing_here'" \
        in result.stderr.replace("\n", "")


def test_importing_the_app_imports_no_handler_module():
    code = (
        "import sys, app\n"
        "app.celery.loader.import_default_modules()\n"
        "assert 'system.exec.echo' in app.celery.tasks\n"
        "print(sorted(m for m in sys.modules if m.startswith('handlers.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout
    # The manifest and the business's settings it names (read with it): no handler module.
    assert out.strip() == "['handlers.manifest', 'handlers.settings']"


@pytest.mark.slow
def test_a_real_worker_starts_without_handler_modules_and_imports_one_on_first_run(
    start_worker_process, tenant
):
    """A prefork worker with one child: the child has no handler module until it runs one."""
    from app import dispatch_intent

    start_worker_process("-P", "prefork", "-c", "1")

    def loaded() -> dict:
        job = dispatch_intent.delay(tenant_id=tenant, intent_key="system.exec.loaded_handlers")
        return wait_for_status(job.get(timeout=15), "completed")["result"]

    first = loaded()
    assert "handlers.system.diagnostics" not in first["modules"]
    assert "handlers.system.introspect" in first["modules"]

    echo = dispatch_intent.delay(tenant_id=tenant, intent_key="system.exec.echo",
                                 intent_params={"hi": 1}).get(timeout=15)
    wait_for_status(echo, "completed")

    second = loaded()
    assert second["pid"] == first["pid"]  # the same pool child ran all three
    assert "handlers.system.diagnostics" in second["modules"]
