"""Accounts: register, log in, log out, and who the current request belongs to.

Every request loads the logged-in user into ``g.user`` (``None`` when anonymous); views that
need one use :func:`login_required`::

    @bp.get("/")
    @login_required
    def index() -> str: ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

from flask import Blueprint, flash, g, redirect, render_template, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db
from .forms import LoginForm, RegisterForm
from .models import User

P = ParamSpec("P")

bp = Blueprint("auth", __name__, url_prefix="/auth")


def login_required(view: Callable[P, ResponseReturnValue]) -> Callable[P, ResponseReturnValue]:
    """Send anonymous visitors to the login page instead of running ``view``."""

    @functools.wraps(view)
    def wrapped_view(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
        if g.user is None:
            return redirect(url_for("auth.login"))
        return view(*args, **kwargs)

    return wrapped_view


@bp.before_app_request
def load_logged_in_user() -> None:
    """Put the session's user (or ``None``) on ``g.user``; a deleted user counts as logged out."""
    user_id = session.get("user_id")
    g.user = db.session.get(User, user_id) if user_id is not None else None


def _log_in(user: User) -> None:
    # A fresh session on every login, so nothing set before it (by anyone) survives.
    session.clear()
    session["user_id"] = user.id


@bp.route("/register", methods=("GET", "POST"))
def register() -> ResponseReturnValue:
    """Create an account and log straight into it."""
    form = RegisterForm()
    if form.validate_on_submit():
        user = User(
            username=form.username.data,
            password_hash=generate_password_hash(form.password.data),
        )
        db.session.add(user)
        try:
            db.session.commit()
        except IntegrityError:
            # The unique constraint decides, so two simultaneous sign-ups cannot both win.
            db.session.rollback()
            form.username.errors.append("That username is already taken.")
        else:
            _log_in(user)
            flash("Welcome! Your account is ready.", "success")
            return redirect(url_for("notes.index"))
    return render_template("auth/register.html", form=form)


@bp.route("/login", methods=("GET", "POST"))
def login() -> ResponseReturnValue:
    """Check a username and password; one message for either being wrong."""
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalar(select(User).where(User.username == form.username.data))
        if user is not None and check_password_hash(user.password_hash, form.password.data):
            _log_in(user)
            return redirect(url_for("notes.index"))
        form.form_errors.append("Incorrect username or password.")
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Forget the user. POST only (with the CSRF token), so no link or image can log anyone out."""
    session.clear()
    flash("You have been logged out.", "info")
    return redirect(url_for("auth.login"))
