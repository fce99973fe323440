"""Every intent: key -> handler, parameter model and options.

Handlers and models are named as ``"module:attribute"`` strings and imported only when a
process first runs (or validates) that intent. Keep the list sorted by family.
"""

from __future__ import annotations

from app.manifest import Intent, RetryPolicy

INTENTS: tuple[Intent, ...] = (
    # --- system: diagnostics ------------------------------------------------------------------
    Intent(
        "system.exec.echo",
        "handlers.system.diagnostics:echo",
        params="handlers.system.params:EchoParams",
        description="Return the parameters as the result.",
    ),
    Intent(
        "system.exec.sleep",
        "handlers.system.diagnostics:sleep",
        params="handlers.system.params:SleepParams",
        description="Sleep for `seconds`, reporting progress.",
        time_limit=3600,
    ),
    Intent(
        "system.exec.loaded_handlers",
        "handlers.system.introspect:loaded_handlers",
        description="List the handler modules this worker process has imported.",
    ),
    Intent(
        "system.exec.flaky",
        "handlers.system.diagnostics:flaky",
        params="handlers.system.params:FlakyParams",
        description="Fail with a transient error `failures` times, then succeed.",
        max_retries=5,
        retry=RetryPolicy(base=0.2, maximum=2.0),
    ),
)
