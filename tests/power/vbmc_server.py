"""One virtualbmc BMC (IPMI on a loopback UDP port) for one libvirt domain, without vbmcd.

Run as ``python vbmc_server.py PORT USER PASSWORD DOMAIN LIBVIRT_URI``; it serves until
killed. This is the class ``vbmcd`` starts per ``vbmc add``; its own daemon is left out so
parallel tests need no shared control port.
"""

import sys

from virtualbmc.vbmc import VirtualBMC

if __name__ == "__main__":
    port, user, password, domain, uri = sys.argv[1:6]
    VirtualBMC(user, password, int(port), "127.0.0.1", domain, uri).listen()
