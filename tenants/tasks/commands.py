"""Operator commands for users and API tokens, on the app's CLI (``flask --help`` lists them).

Through the dispatcher they run in one tenant's app, on that tenant's database. The new token
is the only thing ``create-token`` writes to stdout, so a script can capture it::

    python -m dispatcher exec globex -- create-user alice
    TOKEN=$(python -m dispatcher exec globex -- create-token alice --name laptop)
    python -m dispatcher exec globex -- revoke-token alice --name laptop
"""

from __future__ import annotations

import re
from datetime import datetime

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .auth import new_token
from .extensions import db
from .models import ApiToken, User, as_utc

USERNAME = re.compile(r"[A-Za-z0-9_.@+-]{1,80}")


def _user(username: str) -> User:
    """The user called ``username``, or a click error that says how to create one."""
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(
            f"No user '{username}'; create it first with: create-user {username}"
        )
    return user


@click.command("create-user")
@click.argument("username")
@with_appcontext
def create_user(username: str) -> None:
    """Create user USERNAME, who can then be given API tokens with create-token."""
    if not USERNAME.fullmatch(username):
        raise click.BadParameter(
            "use 1 to 80 letters, digits or the characters . _ @ + -", param_hint="USERNAME"
        )
    db.session.add(User(username=username))
    try:
        db.session.commit()
    except IntegrityError:  # the unique constraint decides, even against a concurrent run
        db.session.rollback()
        raise click.ClickException(f"User '{username}' already exists.") from None
    click.echo(f"Created user '{username}'.")


@click.command("create-token")
@click.argument("username")
@click.option(
    "--name",
    default="default",
    show_default=True,
    help="A label that tells the user's tokens apart, and by which it can be revoked.",
)
@with_appcontext
def create_token(username: str, name: str) -> None:
    """Create an API token for USERNAME and print it, this once.

    Only its SHA-256 hash is stored, so a lost token cannot be shown again: revoke it and
    create another. The token is the only output on stdout; the message goes to stderr.
    """
    user = _user(username)
    token, token_hash = new_token()
    record = ApiToken(user_id=user.id, name=name, token_hash=token_hash)
    db.session.add(record)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise click.ClickException(
            f"User '{username}' already has a token named '{name}'; choose another --name, "
            f"or revoke that one first: revoke-token {username} --name {name}"
        ) from None
    click.echo(
        f"Created token '{name}' (id {record.id}) for '{username}'. Copy it now: it is not "
        "stored and cannot be shown again.",
        err=True,
    )
    click.echo(token)


@click.command("revoke-token")
@click.argument("username")
@click.option("--name", help="The name of the token to revoke.")
@click.option("--id", "token_id", type=int, help="The id of the token to revoke.")
@with_appcontext
def revoke_token(username: str, name: str | None, token_id: int | None) -> None:
    """Revoke one of USERNAME's API tokens, given by --name or --id; it stops working at once."""
    if (name is None) == (token_id is None):
        raise click.UsageError("Give the token's --name or its --id (one of them).")
    user = _user(username)
    chosen = ApiToken.name == name if name is not None else ApiToken.id == token_id
    record = db.session.scalar(select(ApiToken).where(ApiToken.user_id == user.id, chosen))
    if record is None:
        which = f"named '{name}'" if name is not None else f"with id {token_id}"
        raise click.ClickException(
            f"User '{username}' has no token {which}; list-tokens {username} shows them."
        )
    revoked = f"'{record.name}' (id {record.id})"  # read before the commit expires the row
    db.session.delete(record)
    db.session.commit()
    click.echo(f"Revoked token {revoked} of '{username}'.")


@click.command("list-tokens")
@click.argument("username")
@with_appcontext
def list_tokens(username: str) -> None:
    """List USERNAME's API tokens: id, name, when created and last used (never the token)."""
    user = _user(username)
    records = db.session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    ).all()
    if not records:
        click.echo(f"User '{username}' has no tokens.")
    for record in records:
        created = _minute(record.created)
        last_used = _minute(record.last_used) if record.last_used is not None else "never"
        click.echo(f"{record.id}\t{record.name}\tcreated {created}\tlast used {last_used}")


def _minute(moment: datetime) -> str:
    return f"{as_utc(moment):%Y-%m-%d %H:%M} UTC"


def init_app(app: Flask) -> None:
    """Add every command of this module to ``app.cli`` (``flask --help`` then lists them)."""
    for command in (create_user, create_token, revoke_token, list_tokens):
        app.cli.add_command(command)
