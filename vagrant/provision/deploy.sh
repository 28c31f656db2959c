#!/usr/bin/env bash
# The agent's cluster-wide objects from deploy/, as they are (SDN_DEPLOY_MANIFESTS, from
# vagrant/lab.rb): the v1alpha1 NetworkPolicy CRD, the agent's ServiceAccount and least-privilege
# RBAC, the ConfigMap with its settings. The agent itself runs as a systemd unit on each node
# (vagrant/README.md, "The agent"), so deploy/daemonset.yaml is not applied.
# shellcheck source=SCRIPTDIR/lib.sh
. "${SDN_SRC:-/vagrant}/vagrant/provision/lib.sh"
need_env SDN_NODE SDN_DEPLOY_MANIFESTS

args=()
for manifest in $SDN_DEPLOY_MANIFESTS; do
  [ -f "$SDN_SRC/$manifest" ] || die "$SDN_SRC/$manifest is missing"
  args+=(-f "$SDN_SRC/$manifest")
done
log "applying ${SDN_DEPLOY_MANIFESTS}"
kubectl_admin apply "${args[@]}"
kubectl_admin wait --for=condition=Established --timeout=120s \
  customresourcedefinition/networkpolicys.net.alpha.kubernetes.io
