"""Notes: list, create, edit and delete the logged-in user's own notes.

Every query is filtered by owner, so another user's note is simply not found (404): its
existence is never revealed. The list is the app's front page, ``/``::

    url_for("notes.index", page=2)
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from .auth import login_required
from .extensions import db
from .forms import NoteForm
from .models import Note

bp = Blueprint("notes", __name__)


def _own_note(note_id: int) -> Note:
    """The current user's note ``note_id``, or a 404 (also when it is someone else's)."""
    note: Note = db.first_or_404(select(Note).where(Note.id == note_id, Note.user_id == g.user.id))
    return note


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    """The user's notes, newest first, ``NOTES_PER_PAGE`` per page (``?page=N``)."""
    statement = (
        select(Note)
        .where(Note.user_id == g.user.id)
        # id breaks ties between notes created within the clock's resolution.
        .order_by(Note.created.desc(), Note.id.desc())
    )
    pagination = db.paginate(
        statement, per_page=current_app.config["NOTES_PER_PAGE"], max_per_page=None
    )
    return render_template("notes/index.html", pagination=pagination)


@bp.route("/create", methods=("GET", "POST"))
@login_required
def create() -> ResponseReturnValue:
    """Write a new note."""
    form = NoteForm()
    if form.validate_on_submit():
        db.session.add(Note(user_id=g.user.id, title=form.title.data, body=form.body.data or ""))
        db.session.commit()
        flash("Note saved.", "success")
        return redirect(url_for("notes.index"))
    return render_template("notes/form.html", form=form, note=None)


@bp.route("/<int:note_id>/edit", methods=("GET", "POST"))
@login_required
def edit(note_id: int) -> ResponseReturnValue:
    """Change one of the user's notes."""
    note = _own_note(note_id)
    form = NoteForm(obj=note)
    if form.validate_on_submit():
        note.title = form.title.data
        note.body = form.body.data or ""
        db.session.commit()
        flash("Note updated.", "success")
        return redirect(url_for("notes.index"))
    return render_template("notes/form.html", form=form, note=note)


@bp.post("/<int:note_id>/delete")
@login_required
def delete(note_id: int) -> ResponseReturnValue:
    """Delete one of the user's notes. POST only, protected by the app-wide CSRF check."""
    db.session.delete(_own_note(note_id))
    db.session.commit()
    flash("Note deleted.", "info")
    return redirect(url_for("notes.index"))
