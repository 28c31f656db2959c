#!/usr/bin/env bash
# A node's pod bridge and its tunnel port, made the same way everywhere: by the netns lab for
# each of its nodes (sdn/lab/nodes.py, against the node's private OVS) and by the Vagrant lab
# on each VM (vagrant/provision/bridge.sh, against the system OVS).
#
#   ovs-node-bridge.sh --dpid HEX16 [--db unix:PATH] [--bridge br-sdn]
#                      [--datapath-type system|netdev] [--protocols LIST]
#                      [--controller TARGET]... [--tunnel vxlan|geneve --local-ip ADDR]
#                      [--tunnel-port tun0] [--tunnel-ofport 1] [--timeout SECONDS]
#
# 1. The bridge, in ONE transaction: datapath type, fail_mode=secure, the pinned datapath-id
#    (16 hex digits), in-band control off, the OpenFlow versions and the controller(s).
#    fail_mode and the controller go in the same transaction as the bridge: changing either
#    later, while no controller is connected, deletes every flow.
# 2. The tunnel port (--tunnel): remote_ip=flow (the flows set tun_dst), local_ip the node's
#    underlay address, ofport 1 (sdn/layout.py TUNNEL_OFPORT), external_ids:sdn-role=tunnel
#    (how the agent finds it).
# 3. Checks: the tunnel port really got its ofport, and the bridge answers OpenFlow on its
#    management socket (ovs-ofctl uses $OVS_RUNDIR, /var/run/openvswitch by default).
#
# Idempotent (--may-exist): provisioning a VM again changes nothing that is already right.
# Exit status 2 for bad arguments, 1 when OVS refuses or a check fails.
set -euo pipefail

prog=${0##*/}
db=""
bridge=br-sdn
datapath_type=system
dpid=""
protocols=OpenFlow10,OpenFlow13,OpenFlow14
controllers=()
tunnel=""
local_ip=""
tunnel_port=tun0
tunnel_ofport=1
timeout=60

usage() {
  sed -n '6,9p' "$0" | sed 's/^#//' >&2
  exit 2
}

die() {
  echo "$prog: $*" >&2
  exit 1
}

bad() {
  echo "$prog: $*" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case $1 in -h|--help) usage ;; esac
  [ $# -ge 2 ] || bad "$1: missing value"
  case $1 in
    --db) db=$2 ;;
    --bridge) bridge=$2 ;;
    --datapath-type) datapath_type=$2 ;;
    --dpid) dpid=$2 ;;
    --protocols) protocols=$2 ;;
    --controller) controllers+=("$2") ;;
    --tunnel) tunnel=$2 ;;
    --local-ip) local_ip=$2 ;;
    --tunnel-port) tunnel_port=$2 ;;
    --tunnel-ofport) tunnel_ofport=$2 ;;
    --timeout) timeout=$2 ;;
    *) bad "unknown option $1" ;;
  esac
  shift 2
done

ifname_ok() { [[ $1 =~ ^[A-Za-z0-9_.-]{1,15}$ ]]; }  # IFNAMSIZ: 15 characters at most
ifname_ok "$bridge" || bad "--bridge $bridge: not a valid interface name (1-15 of A-Za-z0-9_.-)"
case $datapath_type in system|netdev) ;; *) bad "--datapath-type must be system or netdev" ;; esac
[[ $dpid =~ ^[0-9a-fA-F]{16}$ ]] || bad "--dpid must be 16 hex digits, not '$dpid'"
[[ $protocols =~ ^OpenFlow1[0-5](,OpenFlow1[0-5])*$ ]] || bad "--protocols $protocols: expected e.g. OpenFlow10,OpenFlow13"
[[ $timeout =~ ^[1-9][0-9]*$ ]] || bad "--timeout must be a positive number of seconds"
if [ -n "$tunnel" ]; then
  case $tunnel in vxlan|geneve) ;; *) bad "--tunnel must be vxlan or geneve" ;; esac
  [[ $local_ip =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || bad "--tunnel needs --local-ip (IPv4), not '$local_ip'"
  ifname_ok "$tunnel_port" || bad "--tunnel-port $tunnel_port: not a valid interface name"
  [[ $tunnel_ofport =~ ^[1-9][0-9]*$ ]] || bad "--tunnel-ofport must be a positive number"
fi

vsctl() {
  ovs-vsctl ${db:+"--db=$db"} "--timeout=$timeout" "$@"
}

# 1. the bridge
args=(--may-exist add-br "$bridge" -- set bridge "$bridge"
      "datapath_type=$datapath_type" fail_mode=secure
      "other-config:datapath-id=$dpid" other-config:disable-in-band=true
      "protocols=$protocols")
if [ ${#controllers[@]} -gt 0 ]; then
  args+=(-- set-controller "$bridge" "${controllers[@]}")
fi
vsctl "${args[@]}" || die "could not create bridge $bridge"

# 2. the tunnel port
if [ -n "$tunnel" ]; then
  vsctl --may-exist add-port "$bridge" "$tunnel_port" -- set interface "$tunnel_port" \
    "type=$tunnel" options:remote_ip=flow "options:local_ip=$local_ip" \
    "ofport_request=$tunnel_ofport" external_ids:sdn-role=tunnel \
    || die "could not add tunnel port $tunnel_port to $bridge"
fi

# 3. checks
deadline=$((SECONDS + timeout))
if [ -n "$tunnel" ]; then
  while :; do
    got=$(vsctl get interface "$tunnel_port" ofport)
    [ "$got" = "$tunnel_ofport" ] && break
    if [[ $got =~ ^[1-9][0-9]*$ ]]; then
      die "tunnel port $tunnel_port got ofport $got, not $tunnel_ofport"
    fi
    if [ $SECONDS -ge $deadline ]; then
      die "tunnel port $tunnel_port has no OpenFlow port (ofport=$got, error=$(vsctl get interface "$tunnel_port" error))"
    fi
    sleep 0.05
  done
fi
until ovs-ofctl -O "$protocols" show "$bridge" >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || die "bridge $bridge does not answer on its management socket"
  sleep 0.05
done
