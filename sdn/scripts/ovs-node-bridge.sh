#!/usr/bin/env bash
# A node's pod bridge and its tunnel port, made the same way everywhere: by the netns lab for
# each of its nodes (sdn/lab/nodes.py, against the node's private OVS) and by the Vagrant lab
# on each VM (vagrant/provision/bridge.sh, against the system OVS).
#
#   ovs-node-bridge.sh --dpid HEX16 [--db unix:PATH] [--bridge br-sdn]
#                      [--datapath-type system|netdev] [--protocols LIST]
#                      [--controller TARGET]... [--tunnel vxlan|geneve --local-ip ADDR]
#                      [--tunnel-port tun0] [--tunnel-ofport 1] [--timeout SECONDS]
#                      [--gateway-ip ADDR/LEN --gateway-mac MAC --cluster-cidr CIDR
#                       [--gateway-port sdn-gw] [--gateway-ofport 2] [--service-cidr CIDR]
#                       [--netns NAME]]
#
# 1. The bridge, in ONE transaction: datapath type, fail_mode=secure, the pinned datapath-id
#    (16 hex digits), in-band control off, the OpenFlow versions and the controller(s).
#    fail_mode and the controller go in the same transaction as the bridge: changing either
#    later, while no controller is connected, deletes every flow.
# 2. The tunnel port (--tunnel): remote_ip=flow (the flows set tun_dst), local_ip the node's
#    underlay address, ofport 1 (sdn/layout.py TUNNEL_OFPORT), external_ids:sdn-role=tunnel
#    (how the agent finds it).
# 3. The gateway port (--gateway-ip): an internal port into the node's own stack, ofport 2
#    (sdn/layout.py GATEWAY_OFPORT), external_ids:sdn-role=gateway and attached-mac (how the
#    agent finds it), holding the first address of the node's pod CIDR; a route for the
#    cluster's pod CIDR through it, IPv4 forwarding on (never for pod veths), ARP answered
#    only for an interface's own addresses, TX checksum offload off (a userspace
#    datapath does not complete checksums). --service-cidr: the Services' ClusterIP range,
#    recorded on the port (external_ids:sdn-service-cidrs) for the agent: a pod's packet to a
#    ClusterIP goes to the node's service proxy before it is judged. --netns: the node's network
#    namespace (the lab).
# 4. Checks: the tunnel port really got its ofport, and the bridge answers OpenFlow on its
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
gateway_ip=""
gateway_mac=""
gateway_port=sdn-gw
gateway_ofport=2
service_cidr=""
cluster_cidr=""
netns=""

usage() {
  sed -n '6,12p' "$0" | sed 's/^#//' >&2
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
    --gateway-ip) gateway_ip=$2 ;;
    --gateway-mac) gateway_mac=$2 ;;
    --gateway-port) gateway_port=$2 ;;
    --gateway-ofport) gateway_ofport=$2 ;;
    --cluster-cidr) cluster_cidr=$2 ;;
    --service-cidr) service_cidr=$2 ;;
    --netns) netns=$2 ;;
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

if [ -n "$gateway_ip" ]; then
  [[ $gateway_ip =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || bad "--gateway-ip must be ADDR/LEN (IPv4), not '$gateway_ip'"
  [[ $gateway_mac =~ ^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$ ]] || bad "--gateway-ip needs --gateway-mac (a MAC), not '$gateway_mac'"
  [[ $cluster_cidr =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || bad "--gateway-ip needs --cluster-cidr (IPv4 CIDR), not '$cluster_cidr'"
  ifname_ok "$gateway_port" || bad "--gateway-port $gateway_port: not a valid interface name"
  [[ $gateway_ofport =~ ^[1-9][0-9]*$ ]] || bad "--gateway-ofport must be a positive number"
fi

node() {  # a command in the node's network namespace
  if [ -n "$netns" ]; then ip netns exec "$netns" "$@"; else "$@"; fi
}

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

# 3. the gateway port
deadline=$((SECONDS + timeout))
if [ -n "$gateway_ip" ]; then
  vsctl --may-exist add-port "$bridge" "$gateway_port" -- set interface "$gateway_port" type=internal \
    "ofport_request=$gateway_ofport" "mac=\"$gateway_mac\"" external_ids:sdn-role=gateway \
    "external_ids:attached-mac=$gateway_mac" "external_ids:sdn-service-cidrs=\"$service_cidr\"" \
    || die "could not add gateway port $gateway_port to $bridge"
  until node ip link show "$gateway_port" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "gateway port $gateway_port did not appear as an interface"
    sleep 0.05
  done
  node ip link set "$gateway_port" address "$gateway_mac" up
  node ip addr replace "$gateway_ip" dev "$gateway_port"
  node ip route replace "$cluster_cidr" dev "$gateway_port"
  node sysctl -qw net.ipv4.ip_forward=1
  # Pods' veths are kernel interfaces of this namespace too: the kernel must neither answer
  # their ARP for the gateway address nor forward what they send, or pod traffic would bypass
  # the bridge's policy. Interfaces made from now on (pod veths) do not forward; none answers
  # ARP for an address it does not hold.
  node sysctl -qw net.ipv4.conf.default.forwarding=0 net.ipv4.conf.all.arp_ignore=1
  if command -v ethtool >/dev/null; then node ethtool -K "$gateway_port" tx off >/dev/null 2>&1 || true; fi
fi

# 4. checks
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
