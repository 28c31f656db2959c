"""The CNI plugin (`sdn-cni`): plugs pods into the node's Open vSwitch bridge and records
their identity in OVSDB, with its own host-local style IPAM.  See docs/cni.md."""
