#!/usr/bin/env bash
# k3s: the server on cp, an agent on each worker, with its own pod network and network-policy
# controller off (ours replace them) and the add-ons that need pods to reach the API server or
# services (CoreDNS, metrics-server, Traefik, ServiceLB, local-path) off: the pipeline forwards
# pod to pod only (docs/architecture.md, "Not (yet) covered").
#
# Pod CIDRs: 10.244.0.0/16, a /24 per node in the order nodes register (cp 10.244.0.0/24,
# then worker-1, worker-2, ... with `vagrant up --no-parallel`), so the example policies'
# ipBlock (10.244.0.0/16 except 10.244.2.0/24) speaks about pod addresses here too.
#
# The agent's identity: the API server also reads a static token file with one entry, the
# token the Vagrantfile made, for the user system:serviceaccount:kube-system:sdn-agent. RBAC
# matches a ServiceAccount subject by that user name, so deploy/rbac.yaml's ClusterRoleBinding
# grants it exactly what it grants the DaemonSet's ServiceAccount, and nothing is added.
# shellcheck source=SCRIPTDIR/lib.sh
. "${SDN_SRC:-/vagrant}/vagrant/provision/lib.sh"
need_env SDN_NODE SDN_ROLE SDN_NODE_IP SDN_CP_IP SDN_K3S_VERSION K3S_TOKEN SDN_AGENT_TOKEN

CLUSTER_CIDR=10.244.0.0/16
# The Services' range and the cluster DNS address in it: what deploy/configmap.yaml's
# serviceCIDR says (the agent's gateway port sends pods' packets for it to kube-proxy).
SERVICE_CIDR=10.96.0.0/12
TOKEN_FILE=/etc/rancher/k3s/sdn-agent-token.csv

# shellcheck disable=SC2153  # SDN_ROLE comes from the Vagrantfile (need_env above)
case $SDN_ROLE in
  server)
    unit=k3s
    install -d -m 755 /etc/rancher/k3s
    (umask 077 && printf '%s,system:serviceaccount:kube-system:sdn-agent,sdn-agent-vagrant-lab,"system:serviceaccounts,system:serviceaccounts:kube-system"\n' \
      "$SDN_AGENT_TOKEN" > "$TOKEN_FILE")
    flags=(server
      --node-name "$SDN_NODE" --node-ip "$SDN_NODE_IP"
      --advertise-address "$SDN_NODE_IP" --tls-san "$SDN_NODE_IP"
      --flannel-backend=none --disable-network-policy
      "--disable=traefik,servicelb,metrics-server,local-storage,coredns"
      --cluster-cidr="$CLUSTER_CIDR" --service-cidr="$SERVICE_CIDR"
      --kube-apiserver-arg=token-auth-file="$TOKEN_FILE"
      --write-kubeconfig-mode=0600)
    ;;
  agent)
    unit=k3s-agent
    flags=(agent --server "https://$SDN_CP_IP:6443"
      --node-name "$SDN_NODE" --node-ip "$SDN_NODE_IP")
    ;;
  *) die "SDN_ROLE must be server or agent, not $SDN_ROLE" ;;
esac

if systemctl is-active --quiet "$unit" && [ "$(k3s --version 2>/dev/null | awk 'NR == 1 {print $3}')" = "$SDN_K3S_VERSION" ]; then
  log "k3s $SDN_K3S_VERSION ($unit) is running"
else
  log "installing k3s $SDN_K3S_VERSION: ${flags[*]}"
  curl -sfL https://get.k3s.io -o "$SDN_HOME/k3s-install.sh"
  INSTALL_K3S_VERSION="$SDN_K3S_VERSION" K3S_TOKEN="$K3S_TOKEN" sh "$SDN_HOME/k3s-install.sh" "${flags[@]}"
fi

if [ "$SDN_ROLE" = server ]; then
  wait_for 300 "the API server" kubectl_admin get --raw /readyz
  log "API server ready"
fi
