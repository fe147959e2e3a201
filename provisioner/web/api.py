"""The flask-smorest ``Api``: OpenAPI document, docs page and the JSON error envelope.

flask-smorest is used (rather than bare apispec) because one set of marshmallow schemas then
validates requests, serialises responses and writes the OpenAPI document, so the three
cannot drift apart.
"""

import json
import math
import threading
from typing import Any

from flask_smorest import Api
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest.spec import openapi_cli
from marshmallow import INCLUDE
from marshmallow import Schema
from marshmallow import fields
from webargs.core import missing
from webargs.flaskparser import FlaskParser
from webargs.flaskparser import abort
from webargs.flaskparser import is_json_request
from werkzeug.exceptions import HTTPException

NOT_JSON_TYPE = "Request body must be JSON (Content-Type: application/json)."


class JsonBodyParser(FlaskParser):
    """Reject a body that is not JSON with 422 naming ``body``, like any other bad field."""

    DEFAULT_VALIDATION_STATUS = 422

    def _raw_load_json(self, req: Any) -> Any:
        data = req.get_data(cache=True)
        if not data:
            return missing
        if not is_json_request(req):
            abort(422, messages={"json": {"body": [NOT_JSON_TYPE]}})
        try:
            return _reject_nul(
                json.loads(
                    data,
                    object_pairs_hook=_unique_keys,
                    parse_constant=_no_constant,
                    parse_float=_finite_float,
                )
            )
        except (ValueError, RecursionError) as exc:
            # json.JSONDecodeError, UnicodeDecodeError, duplicate keys, NaN/Infinity and
            # integers too long to convert are all a client's bad body, never a 500.
            problem = (
                str(exc) if isinstance(exc, _BodyProblem) else "Request body is not valid JSON."
            )
            abort(422, exc=exc, messages={"json": {"body": [problem]}})

    def _handle_invalid_json_error(self, error: Exception, req: Any, *args: Any, **kwargs: Any):
        abort(422, exc=error, messages={"json": {"body": ["Request body is not valid JSON."]}})


class _BodyProblem(ValueError):
    """A JSON body that parses but cannot be accepted."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise _BodyProblem(f"Duplicate key {duplicate[:50]!r} in JSON object.")
    return dict(pairs)


def _reject_nul(value: Any) -> Any:
    """Refuse text no database can store: NUL characters and lone surrogates (\\ud800)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _BodyProblem("NUL characters are not allowed in JSON strings.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _BodyProblem(
                "JSON strings must be valid Unicode (no lone surrogates)."
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key)
            _reject_nul(item)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item)
    return value


def _no_constant(name: str) -> Any:
    raise _BodyProblem(f"{name} is not a valid JSON number.")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _BodyProblem(f"The number {text[:40]} is out of range.")
    return number


class Blueprint(SmorestBlueprint):
    """A smorest blueprint whose body parser treats malformed JSON as a validation error."""

    ARGUMENTS_PARSER = JsonBodyParser()


def _string_keys(errors: Any) -> Any:
    """marshmallow keys list items by index (ints); JSON objects need string keys."""
    if isinstance(errors, dict):
        return {str(key): _string_keys(value) for key, value in errors.items()}
    return errors


def flatten_errors(errors: Any) -> Any:
    """Drop webargs' location level (``{"json": {...}}``) so errors name the fields directly."""
    errors = _string_keys(errors)
    if isinstance(errors, dict) and len(errors) == 1:
        (location,) = errors
        if location in {"json", "query", "form", "headers", "view_args", "path"}:
            errors = errors[location]
    if isinstance(errors, dict) and "_schema" in errors:
        errors = {("body" if k == "_schema" else k): v for k, v in errors.items()}
    return errors


def error_message(code_name: str, errors: Any) -> str:
    """Summarise field errors in one line, handy for people reading curl output."""
    if not isinstance(errors, dict) or not errors:
        return code_name
    parts = []
    for field, problems in errors.items():
        text = "; ".join(problems) if isinstance(problems, list) else str(problems)
        parts.append(f"{field}: {text}")
    return "Invalid request: " + ", ".join(parts)


class ErrorSchema(Schema):
    """The body of every error response (documentation; the handler below writes it)."""

    class Meta:
        unknown = INCLUDE  # a 409 adds current_state, requested_state, valid_transitions

    success = fields.Boolean(metadata={"description": "Always false"})
    code = fields.Integer(metadata={"description": "HTTP status code"})
    status = fields.String(metadata={"description": "HTTP status name"})
    message = fields.String(metadata={"description": "What went wrong, in one line"})
    errors = fields.Dict(metadata={"description": "Problems per field"})
    current_state = fields.String()
    requested_state = fields.String()
    valid_transitions = fields.List(fields.String())


class ProvisionerApi(Api):
    """Api whose error bodies follow the project envelope ``{success: false, code, message}``.

    The OpenAPI document is written when first read (``/api/v1/openapi.json``, the docs page,
    ``flask openapi``), not while ``create_app`` registers the blueprints: documenting every
    view was most of the factory's cost, and every CLI command and every test builds an app
    that never serves the document. The document is the same either way.
    """

    ERROR_SCHEMA = ErrorSchema

    def __init__(self) -> None:
        self._spec: Any = None
        #: What the next read of ``spec`` documents: the spec options given to ``init_app``
        #: and the blueprints registered since, or None once written.
        self._undocumented: tuple[dict[str, Any], list[tuple[Any, str, Any]]] | None = None
        self._spec_lock = threading.Lock()
        self._writer: int | None = None
        super().__init__()

    @property
    def spec(self) -> Any:
        """The app's ``APISpec``, written on first use."""
        if self._undocumented is not None and self._writer != threading.get_ident():
            with self._spec_lock:
                if self._undocumented is not None:
                    self._write_spec()
        return self._spec

    @spec.setter
    def spec(self, value: Any) -> None:
        self._spec = value

    def _init_spec(self, **spec_kwargs: Any) -> None:
        self._spec = None
        self._undocumented = (spec_kwargs, [])
        self._app.cli.add_command(openapi_cli)

    def register_blueprint(self, blp: Any, *, parameters: Any = None, **options: Any) -> None:
        """Register the blueprint now and document its views when the spec is first read."""
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        if self._undocumented is None:
            self._document(blp, name, parameters)
        else:
            self._undocumented[1].append((blp, name, parameters))

    def _write_spec(self) -> None:
        spec_kwargs, blueprints = self._undocumented
        self._writer = threading.get_ident()
        try:
            super()._init_spec(**spec_kwargs)
            for blp, name, parameters in blueprints:
                self._document(blp, name, parameters)
            self._undocumented = None
        finally:
            self._writer = None

    def _document(self, blp: Any, name: str, parameters: Any) -> None:
        # What flask-smorest's register_blueprint does after registering (0.47).
        blp.register_views_in_doc(self, self._app, self._spec, name=name, parameters=parameters)
        self._spec.tag({"name": name, "description": blp.description})

    def handle_http_exception(self, error: HTTPException):
        payload: dict[str, Any] = {"success": False, "code": error.code, "status": error.name}
        headers: dict[str, str] = {}
        data = getattr(error, "data", None) or {}
        errors = data.get("errors", data.get("messages"))
        if errors is not None:
            payload["errors"] = flatten_errors(errors)
        payload["message"] = data.get("message") or (
            error_message(error.name, payload["errors"]) if errors else error.description
        )
        payload.update(data.get("extra") or {})
        headers.update(data.get("headers") or {})
        return payload, error.code, headers


#: The app's flask-smorest ``Api``, bound in ``create_app`` (it was in ``extensions``, which
#: now holds only what the models need, so that nothing below the web imports the web).
api = ProvisionerApi()


def fail(code: int, message: str, **extra: Any) -> None:
    """Abort the request with a JSON error; ``extra`` keys are added to the body."""
    abort(code, message=message, extra=extra)
