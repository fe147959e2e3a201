"""What a machine told iPXE about itself, and whether a workflow fits it.

iPXE reports ``${buildarch}`` (the architecture iPXE was built for) and ``${platform}``
(``pcbios`` or ``efi``). Workflows name an ``architecture`` (``x86_64`` by default) and a
``boot_mode`` (``bios``, ``uefi`` or ``any``). No Flask, no database.
"""

#: Spellings of one architecture, as iPXE, Debian, Red Hat and people write them.
ARCH_ALIASES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "i386": "i386",
    "i486": "i386",
    "i586": "i386",
    "i686": "i386",
    "x86": "i386",
    "arm64": "arm64",
    "aarch64": "arm64",
    "arm32": "arm32",
    "arm": "arm32",
    "armhf": "arm32",
    "armv7l": "arm32",
}
#: The x86 family: BIOS iPXE builds (``undionly.kpxe``) are i386 even on a 64-bit CPU,
#: and a 64-bit CPU runs a 32-bit installer, so iPXE's word cannot refuse either way.
X86 = frozenset({"x86_64", "i386"})
#: iPXE's ``${platform}`` and the ``boot_mode`` the server stores for it.
PLATFORM_BOOT_MODES = {"pcbios": "bios", "efi": "uefi"}
BOOT_MODE_PLATFORMS = {mode: platform for platform, mode in PLATFORM_BOOT_MODES.items()}


def normalize_arch(value: str | None) -> str | None:
    """One name per architecture (``aarch64`` → ``arm64``); unknown names lower-cased."""
    if not value:
        return None
    text = value.strip().lower()
    return ARCH_ALIASES.get(text, text)


def boot_mode_of(platform: str | None) -> str | None:
    """The ``boot_mode`` (bios/uefi) of an iPXE ``${platform}``, or None if unknown."""
    return PLATFORM_BOOT_MODES.get((platform or "").strip().lower())


def architecture_fits(wanted: str | None, machine: str | None) -> bool:
    """Whether a workflow for ``wanted`` can run on a machine whose iPXE said ``machine``."""
    want, have = normalize_arch(wanted), normalize_arch(machine)
    if want in (None, "any") or have is None or want == have:
        return True
    return want in X86 and have in X86


def architecture_mismatch(wanted: str | None, machine: str | None) -> str | None:
    """Why a workflow for ``wanted`` cannot be served to a ``machine`` one, or None."""
    if architecture_fits(wanted, machine):
        return None
    return (
        f"the workflow is for {wanted} but the machine's iPXE is {machine}: assign a "
        f"workflow whose architecture is {normalize_arch(machine)}"
    )
