"""Finding an asset: a path relative to ``ASSETS_DIR`` that can never leave it."""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

#: Suffix of a download in progress (``.NAME.part``): never served, never listed.
PART_SUFFIX = ".part"


class AssetNotFound(Exception):
    """No servable file at that path; the message says why (for the log, not the client)."""


@dataclass
class OpenAsset:
    """An open asset file: its descriptor, size and modification time."""

    path: str
    fd: int
    size: int
    mtime_ns: int

    def close(self) -> None:
        """Close the descriptor (once)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def clean_path(relative: str) -> str:
    """``relative`` as a plain path below the assets directory, or ``AssetNotFound``.

    Refused: ``..``, empty or ``.`` segments, hidden names (``.NAME``, which includes the
    ``.NAME.part`` of a download in progress), backslashes and control characters.
    """
    if not relative or len(relative) > 4096:
        raise AssetNotFound("empty or overlong path")
    if any(ord(character) < 32 or character in "\\\x7f" for character in relative):
        raise AssetNotFound("control character or backslash in path")
    parts = relative.strip("/").split("/")
    for part in parts:
        if part in {"", ".", ".."} or part.startswith("."):
            raise AssetNotFound(f"segment {part!r} refused")
    return "/".join(parts)


def open_asset(root: Path, relative: str) -> OpenAsset:
    """Open the regular file ``relative`` names below ``root``; symlinks may point anywhere
    inside ``root`` but never out of it, and a directory is never listed (not found)."""
    path = clean_path(relative)
    base = root.resolve()
    try:
        real = (base / path).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise AssetNotFound(f"{path}: {exc}") from None
    if not real.is_relative_to(base) or real == base:
        raise AssetNotFound(f"{path}: leads out of {base}")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise AssetNotFound(f"{path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise AssetNotFound(f"{path}: not a regular file")
    return OpenAsset(path, fd, info.st_size, info.st_mtime_ns)


def is_asset_reference(value: str) -> bool:
    """Whether a rendered kernel/initrd value names a file in ``ASSETS_DIR`` (no scheme)."""
    return "://" not in value
