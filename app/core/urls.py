"""The URLs settings hold: the handler role's database URL derived from the engine's, Redis
Sentinel URLs, the user and password in a database URL."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit

#: The role handlers' connections log in as, unless JOBQ_HANDLER_DATABASE_URL names another.
HANDLER_ROLE = "jobq_handler"


def handler_url_for(database_url: str, role: str = HANDLER_ROLE) -> str:
    """``database_url`` (the engine's) with the handler role as its user and no password: the
    same server and database. Where the server wants a password from that role too, set
    JOBQ_HANDLER_DATABASE_URL instead."""
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}@{host}"))


def is_sentinel_url(url: str | None) -> bool:
    """Whether ``url`` names Redis Sentinels (``sentinel://h1:26379;sentinel://h2:26379``)."""
    return url is not None and url.strip().lower().startswith("sentinel://")


def url_user(url: str) -> tuple[str | None, str | None]:
    """The user name and password in a database URL (percent-decoded), either None."""
    parts = urlsplit(url)
    return (unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None)
