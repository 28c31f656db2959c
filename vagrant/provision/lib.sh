# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this
# Sourced by every provisioning script, from the synced folder (Vagrant uploads a provisioning
# script alone, so its siblings are read from /vagrant). The Vagrantfile passes the SDN_*
# variables (vagrant/lab.rb, SdnLab.provision_env).
set -euo pipefail

SDN_SRC=${SDN_SRC:-/vagrant}
SDN_HOME=/opt/sdn                  # the venv, the package's source copy, our tools
SDN_VENV=$SDN_HOME/venv
SDN_ETC=/etc/sdn                   # sdn.yaml (the ConfigMap's), kubeconfig, agent.env
SDNVM=$SDN_HOME/bin/sdnvm          # vagrant/tools/sdnvm.py, installed by sdn.sh
K3S_STATE=/var/lib/rancher/k3s
export DEBIAN_FRONTEND=noninteractive

log() {
  printf '==> [%s] %s\n' "${SDN_NODE:-?}" "$*"
}

die() {
  printf '==> [%s] error: %s\n' "${SDN_NODE:-?}" "$*" >&2
  exit 1
}

# need_env VAR...: each must be set and non-empty.
need_env() {
  local var
  for var in "$@"; do
    [ -n "${!var:-}" ] || die "$var is not set: run this through the Vagrantfile (vagrant provision)"
  done
}

# wait_for SECONDS WHAT COMMAND...: run COMMAND every 2 s until it succeeds.
wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "gave up after ${limit}s waiting for $what"
    sleep 2
  done
}

# setting NAME: one value of the agent's settings (/etc/sdn/sdn.yaml), through the package's
# own parser (sdn.k8s.settings); NAME as in Settings: bridge, ovsdb, openflow, tunnel, ...
setting() {
  "$SDNVM" setting "$1"
}

kubectl_admin() {
  k3s kubectl --kubeconfig /etc/rancher/k3s/k3s.yaml "$@"
}
