"""What each reported event does from each node state: the table both the unit test of the
report rule (tests/unit/test_report_rules.py) and the API tests of ``POST /api/v1/report``
check the code against."""

STATES = [
    "discovered",
    "pending",
    "installing",
    "installed",
    "active",
    "install_failed",
    "reprovision",
    "retired",
]
REPORTED = [
    "boot_started",
    "install_started",
    "install_progress",
    "install_complete",
    "install_failed",
    "first_boot",
    "heartbeat",
]

#: (event, state) → (resulting state, effect, message) where the event fits the state.
#: Every other pair is recorded but ignored, and leaves the node where it was.
FITS = {
    **{
        ("boot_started", state): (state, "logged", "Boot started event logged") for state in STATES
    },
    **{("heartbeat", state): (state, "logged", "Heartbeat received") for state in STATES},
    ("install_started", "pending"): ("installing", "pending→installing", "Installation started"),
    ("install_started", "installing"): (
        "installing",
        "logged: already installing",
        "Installation started",
    ),
    ("install_progress", "installing"): (
        "installing",
        "progress 40%",
        "Installation progress: 40%",
    ),
    ("install_complete", "installing"): (
        "installed",
        "installing→installed",
        "Installation completed",
    ),
    ("install_failed", "installing"): (
        "pending",
        "installing→pending (attempt 1 of 3)",
        "Installation failed (attempt 1), will retry",
    ),
    ("first_boot", "installed"): ("active", "installed→active", "First boot - node now active"),
}
