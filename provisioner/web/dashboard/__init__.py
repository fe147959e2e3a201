"""The web dashboard: server-rendered pages for operators, live through polled fragments.

``views`` holds the pages, ``actions`` the operator's buttons, ``access`` who may see and
press them (the API's token rules, through a signed session cookie), ``power`` the
power buttons.
"""

from flask import Flask

from provisioner.web import groups_dashboard  # noqa: F401  (adds /groups to bp)
from provisioner.web.dashboard import access
from provisioner.web.dashboard import actions  # noqa: F401  (adds its routes to bp)
from provisioner.web.dashboard import filters
from provisioner.web.dashboard import power  # noqa: F401  (adds its routes to bp)
from provisioner.web.dashboard.views import bp


def init_app(app: Flask) -> None:
    """Register the dashboard pages, their filters and the session settings."""
    access.init_app(app)
    filters.init_app(app)
    app.register_blueprint(bp)
