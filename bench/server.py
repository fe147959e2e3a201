"""What every scenario starts with: a migrated SQLite file and the server's environment."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from dbcheck import rows  # noqa: E402,F401  (re-exported for the scenarios)
from serverproc import PROVISIONER_SCRIPT  # noqa: E402
from serverproc import ServerProcess  # noqa: E402,F401  (re-exported for the scenarios)
from serverproc import free_port  # noqa: E402,F401
from serverproc import server_environment  # noqa: E402


def migrated_database(workdir: Path, name: str, **settings: str) -> tuple[Path, dict[str, str]]:
    """A fresh, migrated SQLite file in ``workdir`` and the server environment using it.

    ``settings`` are more ``PROVISIONER_<KEY>`` values, given without the prefix.
    """
    database = workdir / f"{name}.db"
    env = server_environment(
        {"PROVISIONER_DATABASE_URL": f"sqlite:///{database}"}
        | {f"PROVISIONER_{key}": value for key, value in settings.items()}
    )
    subprocess.run(
        [str(PROVISIONER_SCRIPT), "db", "upgrade"], env=env, check=True, capture_output=True
    )
    return database, env
