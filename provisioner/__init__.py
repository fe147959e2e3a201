"""provisioner: a bare-metal provisioning server (iPXE boot scripts and install lifecycle)."""

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from provisioner import cli
from provisioner import config
from provisioner import errors
from provisioner import logs
from provisioner import scheduler
from provisioner.domain import install_configs
from provisioner.domain.workflows import WorkflowStore
from provisioner.extensions import db
from provisioner.extensions import migrate
from provisioner.outbox import webhooks
from provisioner.power import worker as power_worker
from provisioner.store import group_commit
from provisioner.store.reads import SingleReads
from provisioner.store.sqlite import configure_engine
from provisioner.web import auth
from provisioner.web import dashboard
from provisioner.web import groups as web_groups
from provisioner.web import metrics
from provisioner.web import request_guard
from provisioner.web import swagger_ui
from provisioner.web.api import api
from provisioner.web.assets import bp as assets_bp
from provisioner.web.boot import config_views  # noqa: F401  (adds its routes to boot_bp)
from provisioner.web.boot.views import bp as boot_bp
from provisioner.web.boot_menu import bp as boot_menu_bp
from provisioner.web.context import SINGLE_READS_KEY
from provisioner.web.events.views import bp as events_bp
from provisioner.web.nodes import stalled_views  # noqa: F401  (adds its route to nodes_bp)
from provisioner.web.nodes.views import bp as nodes_bp
from provisioner.web.power import bp as power_bp

#: Largest request body accepted (413 beyond): reports and API bodies are small JSON.
MAX_BODY_BYTES = 64 * 1024
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the application: config, extensions, blueprints, errors, CLI and scheduler jobs.

    Building never starts the scheduler: that is ``provisioner serve``'s and ``wsgi.py``'s job,
    because the factory also runs for every CLI command and every test.
    """
    app = Flask(__name__, instance_relative_config=True)
    load_config(app, test_config)
    init_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_cli(app)
    return app


def load_config(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Read and check settings, then derive what the extensions need from them."""
    initial_data_dir = config.initial_data_dir(os.environ)
    settings = config.load_settings(str(initial_data_dir), test_config)
    # Everything written (the SQLite file, the secret key) goes to the data directory,
    # which Flask knows as the instance folder.
    app.instance_path = str(Path(settings["DATA_DIR"] or initial_data_dir).absolute())
    config.prepare_data_dir(Path(app.instance_path))
    app.config.update(settings)
    app.config["DATA_DIR"] = app.instance_path
    app.config["SQLALCHEMY_DATABASE_URI"] = config.database_uri(
        settings["DATABASE_URL"], app.instance_path
    )
    config.check_database_url(app.config["SQLALCHEMY_DATABASE_URI"])
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = config.engine_options(
        settings, app.config["SQLALCHEMY_DATABASE_URI"]
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["SECRET_KEY"] = settings["SECRET_KEY"] or config.instance_secret(app.instance_path)
    app.config["WORKFLOWS_DIR"] = config.workflows_dir(
        settings["WORKFLOWS_DIR"], app.instance_path
    )
    app.config["ASSETS_DIR"] = config.assets_dir(settings["ASSETS_DIR"], app.instance_path)
    app.config.update(
        API_TITLE="provisioner",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="v1/openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=swagger_ui.URL_PATH + "/",
    )
    logging.getLogger("provisioner").setLevel(settings["LOG_LEVEL"])
    if settings["TRUSTED_PROXIES"]:
        hops = settings["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def init_extensions(app: Flask) -> None:
    """Bind the database, migrations and API objects to this app."""
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)
    api.init_app(app)
    request_guard.init_app(app)
    app.register_blueprint(swagger_ui.bp)
    auth.init_app(app)
    metrics.init_app(app)
    logs.init_app(app)
    webhooks.init_app(app)
    group_commit.init_app(app)
    dashboard.init_app(app)
    power_worker.init_app(app)
    web_groups.init_app(app)
    with app.app_context():
        configure_engine(db.engine, app.config["SQLITE_SYNCHRONOUS"])
        app.extensions[SINGLE_READS_KEY] = SingleReads(db.engine)
    app.extensions["provisioner.domain.workflows"] = WorkflowStore(
        Path(app.config["WORKFLOWS_DIR"])
    )
    app.extensions[scheduler.EXTENSION_KEY] = scheduler.build_scheduler(app)
    app.extensions["provisioner.jinja"] = install_configs.environment(
        Path(app.config["WORKFLOWS_DIR"])
    )


def register_blueprints(app: Flask) -> None:
    """Attach the node, boot and event APIs."""
    for blueprint in (
        nodes_bp,
        boot_bp,
        events_bp,
        power_bp,
        assets_bp,
        web_groups.bp,
        boot_menu_bp,
    ):
        api.register_blueprint(blueprint)


def register_error_handlers(app: Flask) -> None:
    """Turn domain errors into JSON responses."""
    errors.register(app)


def register_cli(app: Flask) -> None:
    """Add the ``nodes``, ``workflows`` and ``serve`` commands to ``flask``/``provisioner``."""
    cli.register(app)
