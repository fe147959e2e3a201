"""The text of every iPXE script the server sends. Nothing here touches the database."""

import re

from provisioner.domain.workflows import BootFiles

HEADER = "#!ipxe"
WAIT_SECONDS = 10

# iPXE expands ${...} and treats || and && as operators even inside an echo, and a newline
# starts a new command, so anything echoed is reduced to characters that mean nothing to it.
_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:;_/=+()@%'!?<>*\[\]-]")


def safe(text: str) -> str:
    """Make ``text`` inert for an iPXE ``echo`` line."""
    return _UNSAFE.sub("?", text)[:300]


def _script(*lines: str) -> str:
    return "\n".join((HEADER, *lines)) + "\n"


def local_boot(reason: str) -> str:
    """Print why, then hand over to the next boot device (the local disk)."""
    return _script(f"echo provisioner: {safe(reason)}", "exit")


def server_trouble(reason: str) -> str:
    """Boot the local disk because the server cannot answer now; the comment says why to
    whoever reads the script, the echo to whoever watches the console."""
    return _script(f"# provisioner: {safe(reason)}", f"echo provisioner: {safe(reason)}", "exit")


def registered(node_id: str, mac: str) -> str:
    """Answer to a machine that was just auto-registered."""
    return _script(
        f"echo provisioner: registered {safe(mac)} as node {safe(node_id)}",
        "echo provisioner: waiting for an operator to assign a workflow; booting locally",
        "exit",
    )


def wait_and_exit(reason: str, seconds: int = WAIT_SECONDS) -> str:
    """Print a problem the operator must fix, give a person time to read it, boot locally."""
    return _script(
        f"echo provisioner: {safe(reason)}",
        f"echo provisioner: booting from local disk in {seconds} seconds",
        f"sleep {seconds}",
        "exit",
    )


def request_error(problem: str) -> str:
    """Answer to a malformed boot request (sent with HTTP 400)."""
    return _script(f"echo provisioner: bad boot request: {safe(problem)}", "exit")


#: iPXE's ``${platform}`` for each workflow ``boot_mode`` that needs one.
PLATFORMS = {"bios": "pcbios", "uefi": "efi"}


def install(files: BootFiles, workflow_name: str, node_id: str, boot_mode: str = "any") -> str:
    """Fetch and start the installer; any failed step prints why instead of hanging."""
    kernel_line = f"kernel {files.kernel_url} {files.cmdline}".rstrip()
    return _script(
        f"echo provisioner: installing {safe(workflow_name)} on node {safe(node_id)}",
        *_platform_guard(boot_mode),
        f"{kernel_line} || goto failed",
        f"initrd {files.initrd_url} || goto failed",
        "boot || goto failed",
        ":failed",
        "echo provisioner: installer failed to start: ${errno}",
        f"sleep {WAIT_SECONDS}",
        "exit",
    )


def _platform_guard(boot_mode: str) -> tuple[str, ...]:
    """Lines that stop a firmware of the wrong kind (a request that did not say which)."""
    platform = PLATFORMS.get(boot_mode)
    if platform is None:
        return ()
    return (
        f"iseq ${{platform}} {platform} || goto wrong_platform",
        "goto fetch",
        ":wrong_platform",
        f"echo provisioner: this workflow needs {boot_mode.upper()} firmware but the machine "
        "booted with ${platform} firmware; booting from local disk",
        f"sleep {WAIT_SECONDS}",
        "exit",
        ":fetch",
    )


def chain(server_url: str) -> str:
    """The script a DHCP server or USB stick points at: ask this server what to boot."""
    base = server_url.rstrip("/")
    # Free-text SMBIOS strings go through iPXE's :uristring (percent-encoded), so a space
    # or an & in them cannot end the URL or start another parameter.
    return _script(
        f"chain {base}/api/v1/boot?mac=${{net0/mac}}&uuid=${{uuid}}"
        "&serial=${serial:uristring}&platform=${platform}&arch=${buildarch}"
        "&vendor=${manufacturer:uristring}&model=${product:uristring}"
        "&asset=${asset:uristring} || exit",
    )
