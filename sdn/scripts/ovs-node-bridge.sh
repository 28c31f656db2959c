#!/usr/bin/env bash
# A node's pod bridge, its tunnel port and its gateway port, made idempotently by the one
# implementation in sdn/node_setup.py (standard library only), which the agent runs at start
# and the netns lab for each of its nodes. This wrapper is for shells: any python3 runs it.
#
#   ovs-node-bridge.sh --dpid HEX16 [--db unix:PATH] [--bridge br-sdn]
#                      [--datapath-type system|netdev] [--protocols LIST]
#                      [--controller TARGET]... [--tunnel vxlan|geneve --local-ip ADDR]
#                      [--tunnel-port tun0] [--tunnel-ofport 1] [--timeout SECONDS]
#                      [--gateway-ip ADDR/LEN --gateway-mac MAC --cluster-cidr CIDR
#                       [--gateway-port sdn-gw] [--gateway-ofport 2] [--service-cidr CIDR]
#                       [--netns NAME]] [--verbose]
#
# What each step does: sdn/node_setup.py. A second run changes nothing.
# Exit status 2 for bad arguments, 1 when OVS refuses or a check fails.
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export SDN_NODE_SETUP_PROG=${0##*/}
PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}" exec "${SDN_PYTHON:-python3}" -m sdn.node_setup "$@"
