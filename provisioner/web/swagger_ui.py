"""Swagger UI's files, served by this server: ``/api/docs`` must work with no internet.

Provisioning networks are usually cut off from the internet, so the docs page cannot load
Swagger UI from a CDN; the ``swagger-ui-bundle`` package ships its files.
"""

from flask import Blueprint
from swagger_ui_bundle import swagger_ui_path

#: Where the files are served; flask-smorest's docs page loads them from here.
URL_PATH = "/api/docs/swagger-ui"

bp = Blueprint("swagger_ui", __name__, static_folder=swagger_ui_path, static_url_path=URL_PATH)
