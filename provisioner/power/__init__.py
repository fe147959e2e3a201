"""Power control: drive a node's BMC (IPMI, Redfish) or wake it (Wake-on-LAN)."""
