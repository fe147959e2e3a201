"""WSGI entry point for any WSGI server: ``waitress-serve provisioner.wsgi:app``,
gunicorn, uWSGI...

Unlike the app factory, this also migrates the database and starts the scheduler (stalled
install sweep, event pruning), because a WSGI server gives us no other moment to do it.
"""

import sys

from provisioner import create_app
from provisioner.config import ConfigError
from provisioner.scheduler import start_scheduler
from provisioner.serve import upgrade_database

try:
    app = create_app()
except ConfigError as exc:
    print(f"provisioner: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

upgrade_database(app)
start_scheduler(app)
