"""``python -m provisioner``: the same command as ``provisioner``."""

from provisioner.cli import main

main(prog_name="provisioner")
