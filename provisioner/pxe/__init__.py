"""PXE from bare metal: proxy DHCP and TFTP (dnsmasq), configured and run by provisioner."""
