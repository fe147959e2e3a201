"""A BMC that answers IPMI over LAN: pyghmi's own BMC server (what virtualbmc is built on),
with the power state and boot device in memory instead of a libvirt domain.

Run as ``python ipmi_bmc.py PORT USER PASSWORD LOG``: every command it carries out is
appended to LOG as one line ("power on", "bootdev network", ...), for a test to read.
"""

import sys

from pyghmi.ipmi import bmc


class MemoryBmc(bmc.Bmc):
    def __init__(self, authdata, port, log_path):
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.power = "off"
        self.bootdev = "default"
        self.log_path = log_path
        self.note("ready")

    def note(self, line):
        with open(self.log_path, "a") as log:
            log.write(line + "\n")

    def get_power_state(self):
        return self.power

    def power_on(self):
        self.power = "on"
        self.note("power on")

    def power_off(self):
        self.power = "off"
        self.note("power off")

    def power_reset(self):
        self.note("power reset")

    def power_cycle(self):
        self.note("power cycle")

    def power_shutdown(self):
        self.power = "off"
        self.note("power shutdown")

    def get_boot_device(self):
        return self.bootdev

    def set_boot_device(self, bootdevice):
        self.bootdev = bootdevice
        self.note(f"bootdev {bootdevice}")


if __name__ == "__main__":
    port, user, password, log_path = sys.argv[1:5]
    MemoryBmc({user: password}, int(port), log_path).listen()
