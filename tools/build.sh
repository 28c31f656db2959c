#!/usr/bin/env bash
# Builds the Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kube-proxy, kubectl), etcd and CoreDNS (the lab's cluster DNS) from the Go module proxy,
# through the wrapper modules tools/k8s, tools/etcd and tools/coredns (go.mod + go.sum, no code
# of ours), into a cache outside the repository keyed by release. Only what is missing is built:
# a second run finds the binaries and builds nothing.
#
#   tools/build.sh            build what is missing, print the bin directory on the last line
#   tools/build.sh --print    print the bin directory only (no build)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pinned() {  # pinned MODULE GOMOD: the version go.mod requires
  awk -v m="$1" '{ for (i = 1; i < NF; i++) if ($i == m && $(i + 1) ~ /^v[0-9]/) { print $(i + 1); exit } }' "$2"
}
k8s_version=$(pinned k8s.io/kubernetes "$here/k8s/go.mod")
etcd_version=$(pinned go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")
coredns_version=$(pinned github.com/coredns/coredns "$here/coredns/go.mod")
[ -n "$k8s_version" ] && [ -n "$etcd_version" ] && [ -n "$coredns_version" ] || { echo "tools/build.sh: cannot read the pinned releases from tools/*/go.mod" >&2; exit 1; }
cache=${SDN_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sdn-netpol}
bin="$cache/kubernetes-$k8s_version-etcd-$etcd_version/bin"
if [ "${1:-}" = --print ]; then echo "$bin"; exit 0; fi

k8s_tools=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl)
missing=()
for t in "${k8s_tools[@]}" etcd etcdctl; do [ -x "$bin/$t" ] || missing+=("$t"); done
# CoreDNS is keyed by its own release: `coredns -version` prints CoreDNS-X.Y.Z.
[ -x "$bin/coredns" ] && [ "$("$bin/coredns" -version 2>/dev/null | head -1)" = "CoreDNS-${coredns_version#v}" ] \
  || missing+=(coredns)
if [ ${#missing[@]} -eq 0 ]; then echo "$bin"; exit 0; fi
wanted() { [[ " ${missing[*]} " == *" $1 "* ]]; }

command -v go >/dev/null || { echo "tools/build.sh: go is not installed (Go >= 1.26 builds ${missing[*]})" >&2; exit 1; }
mkdir -p "$bin"
tmp=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
ldk="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$k8s_version" | cut -d. -f2) -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"
start=$SECONDS
echo "building ${missing[*]} (Kubernetes $k8s_version, etcd $etcd_version, CoreDNS $coredns_version) from the Go module proxy into $bin" >&2
echo "(10-25 minutes on 2 cores when the Go caches are cold; reused afterwards)" >&2
for t in etcd etcdctl; do
  wanted "$t" || continue
  pkg=go.etcd.io/etcd/server/v3; [ "$t" = etcdctl ] && pkg=go.etcd.io/etcd/etcdctl/v3
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/$t" "$pkg")
  echo "  $t: $((SECONDS - start)) s" >&2
done
for t in "${k8s_tools[@]}"; do
  wanted "$t" || continue
  (cd "$here/k8s" && go build -trimpath -ldflags "$ldk" -o "$tmp/$t" "k8s.io/kubernetes/cmd/$t")
  echo "  $t: $((SECONDS - start)) s" >&2
done
if wanted coredns; then
  (cd "$here/coredns" && go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" github.com/coredns/coredns)
  echo "  coredns: $((SECONDS - start)) s" >&2
fi
mv "$tmp"/* "$bin/"
echo "built in $((SECONDS - start)) s" >&2
echo "$bin"
