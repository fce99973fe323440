"""How Python values bind to the statements' parameters where the driver's own way would not do:
JSON that keeps ``None`` as SQL NULL (not the JSON ``null``), and lists of job ids."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

#: A JSON value; None binds as SQL NULL.
JSON = JSONB(none_as_null=True)
#: A list of job ids (text) as ``uuid[]``.
IDS = ARRAY(UUID(as_uuid=False))
