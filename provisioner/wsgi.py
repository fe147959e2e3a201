"""WSGI entry point for any WSGI server: ``waitress-serve provisioner.wsgi:app``,
``gunicorn -w 3 provisioner.wsgi:app``, uWSGI...

Unlike the app factory, this also migrates the database and starts the scheduler (stalled
install sweep, event pruning), because a WSGI server gives us no other moment to do it.
Several workers may import it at once: migrations take a lock, and of the schedulers only
one per database runs the jobs (the others stand by). An operational error (bad setting,
unreachable database) is one line on stderr and exit status 4, as in the CLI.
"""

import os
import sys

from provisioner import create_app
from provisioner import operational
from provisioner.config import ENV_PREFIX
from provisioner.scheduler import start_scheduler
from provisioner.serve import upgrade_database

APP_LOAD_ERROR = 4

try:
    app = create_app()
    upgrade_database(app)
except Exception as exc:
    message = operational.describe(exc, os.environ.get(ENV_PREFIX + "DATABASE_URL"))
    if message is None:
        raise
    print(f"provisioner: {message}", file=sys.stderr)
    # 4 is gunicorn's "app failed to load": it stops instead of respawning workers forever.
    raise SystemExit(APP_LOAD_ERROR) from None

start_scheduler(app)
