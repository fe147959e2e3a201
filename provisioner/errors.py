"""App-wide error handlers: every failure leaves as JSON with the project's error envelope."""

import logging

from flask import Flask
from marshmallow import ValidationError
from sqlalchemy.exc import DataError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import Conflict
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import InternalServerError
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.exceptions import UnprocessableEntity

from provisioner.domain.lifecycle import ConcurrentTransition
from provisioner.domain.lifecycle import IllegalTransition
from provisioner.extensions import db
from provisioner.store.transactions import is_storage_full
from provisioner.web.api import api
from provisioner.web.api import flatten_errors

log = logging.getLogger(__name__)


def _json_error(exc: HTTPException, message: str, **extra: object):
    exc.data = {"message": message, "extra": extra}  # type: ignore[attr-defined]
    return api.handle_http_exception(exc)


def handle_illegal_transition(exc: IllegalTransition):
    db.session.rollback()
    return _json_error(
        Conflict(),
        str(exc),
        current_state=exc.current,
        requested_state=exc.target,
        valid_transitions=exc.valid,
    )


def handle_concurrent_transition(exc: ConcurrentTransition):
    db.session.rollback()
    return _json_error(Conflict(), f"{exc}; retry the request")


def handle_integrity_error(exc: IntegrityError):
    db.session.rollback()
    log.info("integrity error: %s", exc.orig)
    return _json_error(Conflict(), "The change conflicts with existing data")


def handle_validation_error(exc: ValidationError):
    db.session.rollback()
    error = UnprocessableEntity()
    error.data = {"errors": flatten_errors(exc.messages)}  # type: ignore[attr-defined]
    return api.handle_http_exception(error)


#: Words in driver errors that mean "the database cannot be reached or is busy", as opposed
#: to a bug such as a missing column, which must surface as a 500 and not invite retries.
#: PostgreSQL's deadlock_detected and serialization_failure.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}
_UNAVAILABLE_HINTS = ("locked", "busy", "connect", "connection", "timeout", "terminat", "closed")


def is_unavailable(exc: OperationalError) -> bool:
    """Tell whether ``exc`` says the database is unreachable or busy (worth a retry).

    A deadlock or serialization failure is included on purpose: retrying is the answer.
    """
    text = str(exc.orig).lower()
    retryable = getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES
    return (
        exc.connection_invalidated or retryable or any(hint in text for hint in _UNAVAILABLE_HINTS)
    )


#: The answer to a write the database has no room for; installers retry on 503.
STORAGE_FULL_MESSAGE = "Database storage is full; nothing was written, retry later"


def handle_operational_error(exc: OperationalError):
    db.session.rollback()
    if is_storage_full(exc):
        log.error("database storage is full, writes fail: %s", exc.orig)
        return _json_error(ServiceUnavailable(), STORAGE_FULL_MESSAGE, cause="storage_full")
    if is_unavailable(exc):
        log.warning("database unavailable: %s", exc.orig)
        return _json_error(ServiceUnavailable(), "Database unavailable; retry shortly")
    log.error("database error", exc_info=exc)
    return _json_error(InternalServerError(), "Internal server error")


def handle_pool_timeout(exc: PoolTimeoutError):
    log.warning("no database connection free: %s", exc)
    return _json_error(ServiceUnavailable(), "Database busy; retry shortly")


def handle_data_error(exc: DataError):
    db.session.rollback()
    log.info("value refused by the database: %s", exc.orig)
    return _json_error(UnprocessableEntity(), "A value is out of range for its field")


def register(app: Flask) -> None:
    """Install the handlers on ``app``."""
    app.register_error_handler(IllegalTransition, handle_illegal_transition)
    app.register_error_handler(ConcurrentTransition, handle_concurrent_transition)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(OperationalError, handle_operational_error)
    app.register_error_handler(PoolTimeoutError, handle_pool_timeout)
    app.register_error_handler(DataError, handle_data_error)
