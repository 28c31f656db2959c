#!/usr/bin/env bash
# The CNI plugin, installed by the code the DaemonSet's init container runs
# (python -m sdn.k8s.install_cni): sdn-cni into the runtime's CNI bin directory and
# 10-sdn.conflist for this node's pod CIDR (read from its Node object, waited for) into the
# config directory. Here the plugin is the venv's sdn-cni (the image bundles it with
# PyInstaller instead); the directories are the ones k3s's containerd reads.
#
# The installer and the agent read the API as the agent's identity
# (deploy/rbac.yaml's ServiceAccount through the static token of k3s.sh): /etc/sdn/kubeconfig.
# shellcheck source=SCRIPTDIR/lib.sh
. "${SDN_SRC:-/vagrant}/vagrant/provision/lib.sh"
need_env SDN_NODE SDN_CP_IP SDN_AGENT_TOKEN

CA=$K3S_STATE/agent/server-ca.crt
CONTAINERD_CONFIG=$K3S_STATE/agent/etc/containerd/config.toml

log "kubeconfig for the agent identity (system:serviceaccount:kube-system:sdn-agent)"
wait_for 300 "k3s to fetch the cluster CA ($CA)" test -s "$CA"
(umask 077 && "$SDNVM" kubeconfig --server "https://$SDN_CP_IP:6443" --ca "$CA" > "$SDN_ETC/kubeconfig.new")
mv "$SDN_ETC/kubeconfig.new" "$SDN_ETC/kubeconfig"
wait_for 300 "the API server to accept the agent identity" \
  "$SDNVM" can-read --kubeconfig "$SDN_ETC/kubeconfig" --node "$SDN_NODE"

# k3s writes its containerd configuration when its agent starts; where that configuration names
# no CNI directories (or is not where this k3s release keeps it), containerd's defaults hold.
for _ in $(seq 60); do
  [ -s "$CONTAINERD_CONFIG" ] && break
  sleep 2
done
[ -s "$CONTAINERD_CONFIG" ] || log "no $CONTAINERD_CONFIG: assuming containerd's default CNI directories"
read -r bin_dir conf_dir < <("$SDNVM" cni-dirs --containerd-config "$CONTAINERD_CONFIG")
log "CNI directories: $bin_dir, $conf_dir"

# The runtime brings up each pod's lo with the standard loopback plugin, from the same directory.
install -d -m 755 "$bin_dir" "$conf_dir"
[ -e "$bin_dir/loopback" ] || ln -s /usr/lib/cni/loopback "$bin_dir/loopback"

log "sdn-cni and 10-sdn.conflist (python -m sdn.k8s.install_cni)"
"$SDN_VENV/bin/python" -m sdn.k8s.install_cni --node "$SDN_NODE" --config "$SDN_ETC/sdn.yaml" \
  --kubeconfig "$SDN_ETC/kubeconfig" --binary "$SDN_VENV/bin/sdn-cni" \
  --cni-bin-dir "$bin_dir" --cni-conf-dir "$conf_dir"
cat "$conf_dir/10-sdn.conflist"
