"""Who may touch which tenant's rows: the binding of a handler's or an API request's transaction
to one tenant, the API's keys, and the secret its binding tickets are made with."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.store.models.base import Base, uuid_pk


class JobqBinding(Base):
    """Which tenant a handler's transaction is bound to: one row per database backend, valid
    for the transaction that wrote it (alembic 0004's ``jobq_bind``). Unlogged: a binding
    never outlives its transaction, so a crash has nothing of value to lose. Handlers can
    neither read nor write it; only the SECURITY DEFINER functions do."""

    __tablename__ = "jobq_bindings"
    __table_args__ = ({"prefixes": ("UNLOGGED",)},)

    pid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: The binding transaction's full id (``pg_current_xact_id()``).
    xid: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: Not ``tenant_id``: that column name marks the tables row-level security binds.
    bound_tenant: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    #: NULL for an API request's binding (``jobq_bind_tenant``, alembic 0006).
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class ApiKey(Base):
    """A key of the HTTP API: one tenant's (or, with no tenant, an operator's spanning them),
    stored as the SHA-256 of its secret, which is shown once when it is created."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index(
            "uq_api_keys_tenant_name",
            text("coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid)"),
            "name",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    #: NULL: an operator key, which names the tenant of each request.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(Text, nullable=False)
    #: The secret's first characters, to tell keys apart in listings.
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    key_hash: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    #: Requests per second; NULL: JOBQ_API_RATE_LIMIT.
    rate_limit: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class JobqApiSecret(Base):
    """The secret an API request's binding ticket is made with (one row; the owner's only)."""

    __tablename__ = "jobq_api_secret"
    __table_args__ = (CheckConstraint("one", name="one"),)

    one: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    secret: Mapped[str] = mapped_column(Text, nullable=False)
