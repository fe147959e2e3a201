"""``provisioner db ...``: apply and inspect migrations (making them is ``flask db``'s)."""

import click
import flask_migrate
from flask import current_app
from flask.cli import with_appcontext

from provisioner.serve import upgrade_database


@click.group("db")
def db_group() -> None:
    """The database schema: apply and inspect migrations.

    Developers make a new migration with Flask-Migrate's own command set:
    flask --app provisioner db migrate -m "what changed"
    """


@db_group.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply the migrations the database lacks ('serve' does this too when it starts).

    \b
    Examples:
      provisioner db upgrade
      PROVISIONER_DATABASE_URL=postgresql+psycopg://provisioner@db/provisioner \\
        provisioner db upgrade
    """
    upgrade_database(current_app)


@db_group.command("current")
@with_appcontext
def db_current() -> None:
    """Print the migration the database is at.

    \b
    Example:
      provisioner db current
    """
    flask_migrate.current(directory=current_app.extensions["migrate"].directory)


@db_group.command("check")
@with_appcontext
def db_check() -> None:
    """Exit 1 if the models and the migrated schema differ (a migration is missing).

    \b
    Example:
      provisioner db check
    """
    flask_migrate.check(directory=current_app.extensions["migrate"].directory)
