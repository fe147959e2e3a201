"""The flask-smorest ``Api``: OpenAPI document, docs page and the JSON error envelope.

flask-smorest is used (rather than bare apispec) because one set of marshmallow schemas then
validates requests, serialises responses and writes the OpenAPI document, so the three
cannot drift apart.
"""

from typing import Any

from flask_smorest import Api
from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser
from webargs.flaskparser import abort
from webargs.flaskparser import is_json_request
from werkzeug.exceptions import HTTPException

NOT_JSON_TYPE = "Request body must be JSON (Content-Type: application/json)."


class JsonBodyParser(FlaskParser):
    """Reject a body that is not JSON with 422 naming ``body``, like any other bad field."""

    DEFAULT_VALIDATION_STATUS = 422

    def _raw_load_json(self, req: Any) -> Any:
        if req.get_data(cache=True) and not is_json_request(req):
            abort(422, messages={"json": {"body": [NOT_JSON_TYPE]}})
        return super()._raw_load_json(req)

    def _handle_invalid_json_error(self, error: Exception, req: Any, *args: Any, **kwargs: Any):
        abort(422, exc=error, messages={"json": {"body": ["Request body is not valid JSON."]}})


class Blueprint(SmorestBlueprint):
    """A smorest blueprint whose body parser treats malformed JSON as a validation error."""

    ARGUMENTS_PARSER = JsonBodyParser()


def flatten_errors(errors: Any) -> Any:
    """Drop webargs' location level (``{"json": {...}}``) so errors name the fields directly."""
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


class ProvisionerApi(Api):
    """Api whose error bodies follow the project envelope ``{success: false, code, message}``."""

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


def fail(code: int, message: str, **extra: Any) -> None:
    """Abort the request with a JSON error; ``extra`` keys are added to the body."""
    abort(code, message=message, extra=extra)
