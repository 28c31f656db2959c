#!/usr/bin/env bash
# Packages and kernel modules every node needs: Open vSwitch (kernel datapath), the tools the
# CNI plugin runs (iproute2, ethtool), Python for our venv, and the standard `loopback` CNI
# plugin (the container runtime sets up each pod's lo with it).
# shellcheck source=SCRIPTDIR/lib.sh
. "${SDN_SRC:-/vagrant}/vagrant/provision/lib.sh"
need_env SDN_NODE

log "packages"
apt-get update -q
apt-get install -y -q --no-install-recommends \
  openvswitch-switch iproute2 ethtool python3 python3-venv \
  containernetworking-plugins curl ca-certificates

log "kernel modules: openvswitch, geneve, vxlan"
printf '%s\n' openvswitch geneve vxlan > /etc/modules-load.d/sdn.conf
for module in openvswitch geneve vxlan; do
  modprobe "$module"
done

log "Open vSwitch"
systemctl enable --now openvswitch-switch
wait_for 60 "ovsdb-server" ovs-vsctl --timeout=5 show
ovs-vsctl --version | head -n 1
