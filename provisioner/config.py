"""Configuration: the defaults, and how a TOML file and ``PROVISIONER_*`` variables override them.

Precedence, lowest first: ``DEFAULTS`` → the TOML file (``--config`` / ``PROVISIONER_CONFIG``,
else ``instance/config.toml`` when present) → ``PROVISIONER_<KEY>`` environment variables →
the mapping a test passes to ``create_app``. Every value is checked here, so a bad one stops
start-up with a message naming the key instead of failing later with a traceback.
"""

import ipaddress
import json
import os
import re
import secrets
import tomllib
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "PROVISIONER_"


class ConfigError(Exception):
    """A configuration file or value is unusable; the message names the key."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _number(kind: type, minimum: float, *, above: bool = False) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a {kind.__name__}")
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a {kind.__name__}") from None
        if kind is int and not isinstance(value, str) and number != value:
            raise ValueError("expected a whole number")
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        if number < minimum or (above and number == minimum):
            raise ValueError(f"must be {'>' if above else '>='} {minimum:g}")
        return number

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _log_level(value: Any) -> str:
    level = _text(value).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def _log_format(value: Any) -> str:
    fmt = _text(value).lower()
    if fmt not in {"text", "json"}:
        raise ValueError('expected "text" or "json"')
    return fmt


def _token_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of token strings")
    for item in value:
        digest = item.removeprefix("sha256:")
        if item.startswith("sha256:") and not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ValueError("a sha256: token must be followed by 64 hex digits")
        if not item.startswith("sha256:") and len(item) < 16:
            raise ValueError("tokens must be at least 16 characters")
    return value


WEBHOOK_EVENTS = {"state_changed", "install_failed", "install_timeout", "stalled"}
WEBHOOK_FORMATS = {"json", "ntfy", "discord"}


def _webhooks(value: Any) -> list[dict[str, Any]]:
    """``[[WEBHOOKS]]`` tables: url, events, optional secret and format."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise ValueError("expected a JSON list of webhook objects") from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError("expected a list of [[WEBHOOKS]] tables")
    hooks = []
    for index, item in enumerate(value):
        where = f"entry {index + 1}"
        unknown = set(item) - {"url", "events", "secret", "format"}
        if unknown:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]}")
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: url must be an http(s) URL")
        events = item.get("events", sorted(WEBHOOK_EVENTS))
        if not isinstance(events, list) or not set(events) <= WEBHOOK_EVENTS or not events:
            raise ValueError(f"{where}: events must be a list of {sorted(WEBHOOK_EVENTS)}")
        secret = item.get("secret", "")
        if not isinstance(secret, str):
            raise ValueError(f"{where}: secret must be a string")
        fmt = item.get("format", "json")
        if fmt not in WEBHOOK_FORMATS:
            raise ValueError(f"{where}: format must be one of {sorted(WEBHOOK_FORMATS)}")
        hooks.append({"url": url, "events": list(events), "secret": secret, "format": fmt})
    return hooks


def _sqlite_synchronous(value: Any) -> str:
    mode = _text(value).strip().lower()
    if mode not in {"normal", "full"}:
        raise ValueError('expected "normal" or "full"')
    return mode


#: A host name (letters, digits, hyphens, dots, underscores), optionally ``.``-prefixed.
_HOST_NAME = re.compile(r"\.?[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})?")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _host_list(value: Any) -> list[str]:
    """``ALLOWED_HOSTS``: names, ``.domain`` for a domain and its subdomains, or ``*``."""
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of host names")
    for item in value:
        if item != "*" and not _HOST_NAME.fullmatch(item) and not _is_address(item):
            raise ValueError(f"{item[:60]!r} is not a host name (no scheme, port or path)")
    return value


def _tag_list(value: Any) -> list[str]:
    """``BOOT_MENU_TAGS``: node tags (a list, or comma-separated in the environment)."""
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of tags")
    for item in value:
        if not re.fullmatch(r"[a-z0-9_-]{1,50}", item):
            raise ValueError(f"{item[:60]!r} is not a tag (a-z, 0-9, _ and -)")
    return value


def _report_auth(value: Any) -> str:
    mode = _text(value).lower()
    if mode not in {"token", "open"}:
        raise ValueError('expected "token" or "open"')
    return mode


def _accel_prefix(value: Any) -> str:
    """``ASSETS_ACCEL_REDIRECT``: empty, or the URI prefix of nginx's internal location."""
    prefix = _text(value).strip()
    if prefix and not re.fullmatch(r"/[A-Za-z0-9._~/-]*/", prefix):
        raise ValueError('expected "" or a path that starts and ends with "/"')
    return prefix


#: Every key, its default and its parser. ``config.example.toml`` documents each one.
SETTINGS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "DATA_DIR": ("", _text),
    "DATABASE_URL": ("sqlite:///provisioner.db", _text),
    "DATABASE_POOL_SIZE": (20, _number(int, 1)),
    "DATABASE_MAX_OVERFLOW": (10, _number(int, 0)),
    "DATABASE_POOL_TIMEOUT": (5.0, _number(float, 0, above=True)),
    "DATABASE_CONNECT_TIMEOUT": (3, _number(int, 1)),
    "SQLITE_SYNCHRONOUS": ("normal", _sqlite_synchronous),
    "WORKFLOWS_DIR": ("", _text),
    "ASSETS_DIR": ("", _text),
    "ASSETS_ACCEL_REDIRECT": ("", _accel_prefix),
    "SERVER_URL": ("", _text),
    "AUTO_REGISTER": (True, _bool),
    "INSTALL_TIMEOUT_MINUTES": (60.0, _number(float, 0)),
    "MAX_INSTALL_ATTEMPTS": (3, _number(int, 1)),
    "SWEEP_INTERVAL_SECONDS": (60.0, _number(float, 0, above=True)),
    "INSTALL_SILENCE_MINUTES": (0.0, _number(float, 0)),
    "FIRST_BOOT_TIMEOUT_MINUTES": (0.0, _number(float, 0)),
    "EVENT_RETENTION_DAYS": (90.0, _number(float, 0)),
    "HEARTBEAT_KEEP_PER_NODE": (100, _number(int, 0)),
    "TRUSTED_PROXIES": (0, _number(int, 0)),
    "ALLOWED_HOSTS": ([], _host_list),
    "API_TOKENS": ([], _token_list),
    "READ_TOKENS": ([], _token_list),
    "REPORT_AUTH": ("token", _report_auth),
    "WEBHOOKS": ([], _webhooks),
    "WEBHOOK_INTERVAL_SECONDS": (5.0, _number(float, 0, above=True)),
    "WEBHOOK_RETRY_SECONDS": (10.0, _number(float, 0, above=True)),
    "SECRET_KEY": ("", _text),
    "LOG_LEVEL": ("INFO", _log_level),
    "LOG_FORMAT": ("text", _log_format),
    "ACCESS_LOG": (False, _bool),
    # Power control (docs/power.md).
    "POWER_KEY": ("", _text),
    "POWER_KEY_FILE": ("", _text),
    "POWER_TIMEOUT_SECONDS": (20.0, _number(float, 0, above=True)),
    "POWER_WORKERS": (8, _number(int, 1)),
    "POWER_IPMITOOL": ("ipmitool", _text),
    "POWER_REDFISH_VERIFY_TLS": (True, _bool),
    "POWER_ON_REPROVISION": (False, _bool),
    "POWER_CYCLE_STALLED": (False, _bool),
    "POWER_STATUS_INTERVAL_SECONDS": (300.0, _number(float, 0)),
    "PXE": (False, _bool),
    "PXE_INTERFACE": ("", _text),
    "PXE_IPXE_DIR": ("/usr/lib/ipxe", _text),
    "PXE_DNSMASQ": ("dnsmasq", _text),
    "PXE_CHAINLOAD_IPXE_ROM": (False, _bool),
    "BOOT_MENU": (False, _bool),
    "BOOT_MENU_TAGS": ([], _tag_list),
    "BOOT_MENU_TIMEOUT_SECONDS": (30, _number(int, 1)),
}

DEFAULTS: dict[str, Any] = {key: default for key, (default, _) in SETTINGS.items()}


def parse_value(key: str, value: Any) -> Any:
    """Check and convert one setting, raising ``ConfigError`` that names the key."""
    try:
        return SETTINGS[key][1](value)
    except ValueError as exc:
        secret = key.endswith("TOKENS") or key in {"SECRET_KEY", "WEBHOOKS", "POWER_KEY"}
        shown = "<hidden>" if secret else repr(value)
        raise ConfigError(f"config key {key}: {exc} (got {shown})") from None


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file; unknown or lower-case keys are errors, not silently dropped."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {unknown[0]}")
    return data


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect ``PROVISIONER_<KEY>`` overrides for known keys."""
    return {key: environ[ENV_PREFIX + key] for key in SETTINGS if ENV_PREFIX + key in environ}


def config_file_path(instance_path: str, environ: Mapping[str, str]) -> Path | None:
    """The TOML file to read: ``PROVISIONER_CONFIG``, else ``instance/config.toml`` if present."""
    if environ.get(ENV_PREFIX + "CONFIG"):
        return Path(environ[ENV_PREFIX + "CONFIG"])
    default = Path(instance_path) / "config.toml"
    return default if default.exists() else None


def load_settings(
    instance_path: str,
    test_config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge defaults, file, environment and test overrides into checked settings."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = dict(DEFAULTS)
    path = config_file_path(instance_path, environ)
    if path is not None:
        merged.update(read_toml(path))
    merged.update(read_environment(environ))
    extra: dict[str, Any] = {}
    for key, value in (test_config or {}).items():
        (merged if key in SETTINGS else extra)[key] = value
    settings = {key: parse_value(key, value) for key, value in merged.items()}
    settings["CONFIG_FILE"] = str(path) if path else None
    return settings | extra


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """The data directory when ``DATA_DIR`` is not set.

    systemd's ``StateDirectory=`` (``$STATE_DIRECTORY``), else ``instance/`` beside a source
    checkout (where the package is imported from), else the platform's data directory
    (``~/.local/share/provisioner`` on Linux): never inside an installed package, which its
    user may not write.
    """
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "instance"
    return Path(platformdirs.user_data_dir("provisioner", appauthor=False))


def initial_data_dir(environ: Mapping[str, str]) -> Path:
    """``PROVISIONER_DATA_DIR`` or the default: where ``config.toml`` is looked for."""
    return Path(environ.get(ENV_PREFIX + "DATA_DIR") or default_data_dir(environ)).absolute()


def prepare_data_dir(path: Path) -> None:
    """Create the data directory if needed and check this user may write to it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"config key DATA_DIR: cannot create {path} ({exc.strerror}); set DATA_DIR "
            "(or PROVISIONER_DATA_DIR) to a directory this user may write"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"config key DATA_DIR: {path} is not writable by this user; set DATA_DIR "
            "(or PROVISIONER_DATA_DIR) to a directory this user may write"
        )


def engine_options(settings: Mapping[str, Any], url: str) -> dict[str, Any]:
    """SQLAlchemy engine options: pool sizes, liveness checks and connect timeouts."""
    if url.startswith("sqlite") and (":memory:" in url or url == "sqlite://"):
        return {}
    options: dict[str, Any] = {
        # A server can restart or fail over under us; a SQLite file cannot, and a ping on
        # every checkout cost a statement per request.
        "pool_pre_ping": not url.startswith("sqlite"),
        "pool_size": settings["DATABASE_POOL_SIZE"],
        "max_overflow": settings["DATABASE_MAX_OVERFLOW"],
        "pool_timeout": settings["DATABASE_POOL_TIMEOUT"],
    }
    if url.startswith("postgresql"):
        timeout = settings["DATABASE_CONNECT_TIMEOUT"]
        # libpq: give up on a silent peer (a network split) instead of waiting forever.
        options["connect_args"] = {
            "connect_timeout": timeout,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        }
    return options


def instance_secret(instance_path: str) -> str:
    """The instance's own secret key, created (mode 0600) on first use.

    Several instances behind one load balancer must share one: set SECRET_KEY instead.
    """
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


#: A checkout's example workflows: the default WORKFLOWS_DIR when the instance has none.
CHECKOUT_WORKFLOWS = Path(__file__).resolve().parent.parent / "examples" / "workflows"


def workflows_dir(setting: str, instance_path: str) -> str:
    """The workflows folder: ``setting`` (relative to the instance folder) if set.

    Unset, it is the instance folder's ``workflows/``; while that does not exist, a
    checkout's ``examples/workflows`` (so the CLI run by hand in a checkout finds them).
    """
    if setting:
        return os.path.join(instance_path, setting)
    own = Path(instance_path) / "workflows"
    if not own.is_dir() and CHECKOUT_WORKFLOWS.is_dir():
        return str(CHECKOUT_WORKFLOWS)
    return str(own)


def assets_dir(setting: str, instance_path: str) -> str:
    """The folder served at ``/assets/``: ``setting`` (relative to the data directory), else
    the data directory's ``assets/``."""
    return os.path.join(instance_path, setting or "assets")


def database_uri(url: str, instance_path: str) -> str:
    """Resolve a relative SQLite path against the instance folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(Path(instance_path) / url[len(prefix) :])
    return url


def check_database_url(url: str) -> None:
    """Refuse a URL SQLAlchemy cannot use, or whose driver is missing, naming DATABASE_URL."""
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except ArgumentError:
        raise ConfigError(
            "config key DATABASE_URL: not a database URL SQLAlchemy knows; expected "
            "sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        if parsed.get_backend_name() != "postgresql":
            hint = f"install the {exc.name} module"
        elif parsed.get_driver_name() == "psycopg":
            hint = "install the PostgreSQL extra: pip install 'provisioner[postgres]'"
        else:
            hint = "write postgresql+psycopg:// and pip install 'provisioner[postgres]'"
        raise ConfigError(
            f"config key DATABASE_URL: {parsed.drivername} needs the {exc.name} module; {hint}"
        ) from None
