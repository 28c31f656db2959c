#!/usr/bin/env bash
# The example cluster's namespaces, pods and policies (examples/), rendered for this cluster by
# `sdnvm render-examples`: Node objects dropped (the cluster has its own), each pod pinned to a
# worker with a nodeSelector (the examples' node-1, node-2, ... in turn; pods stay Pending until
# their worker has joined), serving its TCP and UDP containerPorts with sdn/lab/serve.py (the
# netns lab's server, from a ConfigMap) in SDN_POD_IMAGE; policies unchanged.
# shellcheck source=SCRIPTDIR/lib.sh
. "${SDN_SRC:-/vagrant}/vagrant/provision/lib.sh"
need_env SDN_NODE SDN_EXAMPLES SDN_POD_NODES SDN_POD_IMAGE

rendered=$SDN_ETC/examples.yaml
log "rendering $SDN_EXAMPLES/ for nodes $SDN_POD_NODES (image $SDN_POD_IMAGE) -> $rendered"
"$SDNVM" render-examples -f "$SDN_SRC/$SDN_EXAMPLES" --nodes "$SDN_POD_NODES" \
  --image "$SDN_POD_IMAGE" > "$rendered.new"
mv "$rendered.new" "$rendered"
kubectl_admin apply -f "$rendered"
log "the example pods start as their workers join: sudo kubectl get pods -A -o wide"
