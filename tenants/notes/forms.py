"""The notes app's forms: input validation and CSRF tokens in one place (Flask-WTF).

Every form is a ``FlaskForm``, so it carries a CSRF token; ``CSRFProtect`` (in
:mod:`.extensions`) also refuses token-less POSTs that bypass these forms::

    form = NoteForm()
    if form.validate_on_submit(): ...
"""

# Flask-WTF and WTForms ship no type information, so their classes are ``Any`` to mypy and
# subclassing them is unavoidable here.
# mypy: disallow-subclassing-any=False

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, TextAreaField
from wtforms.validators import DataRequired, EqualTo, Length


def _strip(value: str | None) -> str | None:
    """Drop surrounding whitespace, so " bob" and "bob" are one username."""
    return value.strip() if isinstance(value, str) else value


class RegisterForm(FlaskForm):
    """Choose a username and password."""

    username = StringField(
        "Username", filters=[_strip], validators=[DataRequired(), Length(min=3, max=80)]
    )
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=200)])
    confirm = PasswordField(
        "Repeat password",
        validators=[DataRequired(), EqualTo("password", message="Passwords must match.")],
    )


class LoginForm(FlaskForm):
    """Username and password; a wrong pair is reported on the form, not on a field."""

    username = StringField("Username", filters=[_strip], validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


class NoteForm(FlaskForm):
    """A note's title (required) and body (optional)."""

    title = StringField("Title", filters=[_strip], validators=[DataRequired(), Length(max=200)])
    body = TextAreaField("Body", validators=[Length(max=20_000)])
