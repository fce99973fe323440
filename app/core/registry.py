"""The process's manifest (``JOBQ_MANIFEST``), read at its first use and then kept: importing
this module reads nothing, and reading the manifest imports no handler module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.core.manifest import Intent, Manifest, load


class _Current:
    """:data:`manifest`: attribute reads, ``in``, iteration and ``len`` go to the manifest
    loaded at the first of them."""

    _loaded: Manifest | None = None

    def _get(self) -> Manifest:
        if _Current._loaded is None:
            _Current._loaded = load()
        return _Current._loaded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __contains__(self, key: object) -> bool:
        return key in self._get()

    def __iter__(self) -> Iterator[Intent]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


#: The process's manifest. Typed as what it stands for (the proxy answers every attribute of a
#: Manifest), so that readers of ``manifest.x`` are checked.
manifest: Manifest = _Current()  # type: ignore[assignment]
