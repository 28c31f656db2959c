#!/usr/bin/env bash
# The node's pod bridge and tunnel port, made by the code the agent runs at start and the netns
# lab runs for its nodes (sdn/node_setup.py, `python -m sdn.node_setup`): here on the system
# Open vSwitch with the kernel datapath, the tunnel from the agent's settings, its local end the
# node's private address. The gateway port needs the node's pod CIDR, which k3s assigns later:
# the agent adds it when it starts (setupNode in deploy/configmap.yaml). Idempotent.
# shellcheck source=SCRIPTDIR/lib.sh
. "${SDN_SRC:-/vagrant}/vagrant/provision/lib.sh"
need_env SDN_NODE SDN_NODE_IP SDN_NODE_INDEX

bridge=$(setting bridge)
tunnel=$(setting tunnel)
# A datapath-id per node, never 0: cp 1, worker-N N+1.
dpid=$(printf '%016x' $((SDN_NODE_INDEX + 1)))

log "bridge $bridge (dpid $dpid), $tunnel tunnel from $SDN_NODE_IP"
"$SDN_VENV/bin/python" -m sdn.node_setup --verbose \
  --db "$(setting ovsdb)" --bridge "$bridge" --datapath-type system --dpid "$dpid" \
  --controller "$(setting openflow)" --tunnel "$tunnel" --local-ip "$SDN_NODE_IP"
ovs-vsctl show
