"""``system.exec.loaded_handlers``: which handler modules this worker process has imported.

Lazy loading is the point of the manifest; this makes it observable on a live worker.
"""

from __future__ import annotations

import os
import sys

from app.handler_api import JobContext, NoParams


def loaded_handlers(ctx: JobContext, params: NoParams) -> dict:
    """The ``handlers.*`` modules imported in this process, and its pid."""
    return {
        "pid": os.getpid(),
        "modules": sorted(m for m in sys.modules if m.startswith("handlers.")),
    }
