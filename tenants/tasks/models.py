"""The tasks app's tables: users, their API tokens, and the tasks each of them owns.

Table names are explicit and plural so they are valid unquoted on PostgreSQL too (``user`` is
a reserved word there). Tokens are stored as SHA-256 hashes only (:mod:`.auth`)::

    task = Task(user_id=user.id, title="Renew passport", due=date(2026, 3, 1))
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Boolean, Date, DateTime, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import Model


def utcnow() -> datetime:
    """The current time, timezone-aware, for column defaults."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime.

    SQLite has no time zone type: what went in aware comes back naive, but it is UTC.
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class User(Model):
    """Someone who owns tasks and API tokens. Created with ``flask create-user``."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)


class ApiToken(Model):
    """One API token of a user: only the SHA-256 hash of the secret is kept, never the secret."""

    __tablename__ = "api_tokens"
    # Revoking by name must find exactly one token of the user.
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: Hex SHA-256 of the token; unique, so a request's token is found with one index lookup.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: ``None`` until first used; then updated at most once a minute (:mod:`.auth`).
    last_used: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship()


class Task(Model):
    """One task. Only its owner (``user_id``) may ever see or change it."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str] = mapped_column(Text, default="")
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    due: Mapped[date | None] = mapped_column(Date)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
