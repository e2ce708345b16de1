"""The notes app's tables: users, and the notes each of them owns.

Table names are explicit and plural so they are valid unquoted on PostgreSQL too (``user`` is
a reserved word there)::

    note = Note(user_id=user.id, title="Groceries", body="milk")
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import Model


def _now() -> datetime:
    """The current time, timezone-aware, for column defaults."""
    return datetime.now(UTC)


class User(Model):
    """Someone who can log in; owns notes."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))


class Note(Model):
    """One note. Only its owner (``user_id``) may ever see or change it."""

    __tablename__ = "notes"
    # The list page filters by owner and sorts by creation time: one index serves both.
    __table_args__ = (Index("ix_notes_user_id_created", "user_id", "created"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    #: ``None`` until the note is first edited.
    updated: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), onupdate=_now)
