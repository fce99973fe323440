"""The process's manifest, read once (no handler imported)."""

from __future__ import annotations

from app.manifest import Manifest, load

manifest: Manifest = load()
