# sdn-netpol: Kubernetes NetworkPolicy -> Open vSwitch flows.
#
#   make test    system packages for every test (root), venv, k8s, make lint, pytest -n auto
#   make demo    the example cluster as a live lab: measured vs predicted matrix, flows (KEEP=1)
#   make demo-k8s  the same through a real Kubernetes control plane (lab up --kubernetes)
#   make k8s     build kube-apiserver & co., etcd and CoreDNS from the Go module proxy into a cache
#                outside the repository (tools/build.sh; minutes when cold, then reused)
#   make bench   run the benchmarks (QUICK=1: < 2 min; as root also OVN side by side, OVN=0: not)
#   make vagrant-up / vagrant-down   the multi-node lab on VMs (vagrant/README.md; SDN_WORKERS=N)
#   make lint    ruff and mypy (pyproject.toml says which rules and why); make test runs it first
#   make clean   remove the venv and caches
#
# The demo and the tests run their own private Open vSwitch daemons, each in a network namespace
# of its own (sdn/ovs/instance.py): they coexist with a system openvswitch-switch service and
# never stop, start or reconfigure it, nor any other service. The Vagrant lab is checked
# statically (tests/test_vagrant.py: vagrant validate, ruby -c, shellcheck).

PYTHON      ?= python3
VENV        ?= .venv
PIP_FLAGS   ?=
PYTEST_ARGS ?= -n auto
EXAMPLES    ?= examples/
NODE        ?= node-1

VPY    := $(VENV)/bin/python
SDNCTL := $(VENV)/bin/sdnctl
STAMP  := $(VENV)/.installed

# What `make demo` needs: Open vSwitch's daemons and tools, ip, ethtool (README, "What the
# commands install"; tests/test_makefile.py keeps them equal).
DEMO_APT_PACKAGES := openvswitch-switch iproute2 ethtool
# What `make test` needs besides: vagrant, vagrant-libvirt (a provider to validate against,
# offline), ruby and shellcheck for the static checks of vagrant/ (tests/test_vagrant.py; no VM
# is started); ovn-central and ovn-host for the OVN side of the benchmarks (benchmarks/ovn.py,
# tests/test_bench_ovn.py); curl for the lab's HTTP check (tests/lab_live.py);
# containernetworking-plugins for the IPAM the CNI plugin delegates to (host-local, tests/test_cni.py).
APT_PACKAGES := $(DEMO_APT_PACKAGES) vagrant vagrant-libvirt ruby shellcheck ovn-central ovn-host curl \
                containernetworking-plugins $(K8S_APT_PACKAGES)
# What the kubernetes mode of the lab needs besides (`make demo-k8s`, tests/test_lab_k8s.py):
# iptables and conntrack for kube-proxy in each node, openssl for the control plane's
# certificates, util-linux for nsenter.
K8S_APT_PACKAGES := iptables conntrack openssl util-linux curl
# What `make bench` installs as root when missing (the OVN comparison on S3 and S5).
BENCH_APT_PACKAGES := ovn-central ovn-host

SHELL := /bin/bash

.PHONY: all help test check system-deps demo-deps k8s-deps venv k8s demo demo-k8s demo-root lab-hint bench \
        lint clean \
        vagrant-up vagrant-down

all: test

help:
	@sed -n '3,10p' Makefile

test: system-deps venv k8s lint
	$(VPY) -m pytest $(PYTEST_ARGS)

# The Kubernetes control plane and the cluster DNS (CoreDNS) the tests and `lab up --kubernetes`
# run: built once per release (tools/k8s/go.mod, tools/etcd/go.mod, tools/coredns/go.mod) into $${XDG_CACHE_HOME:-~/.cache}/sdn-netpol/.
k8s:
	@command -v go >/dev/null || { echo "make k8s needs Go >= 1.26 (it builds Kubernetes from the Go module proxy)" >&2; exit 1; }
	@bash tools/build.sh >/dev/null

check: test

# ---------------------------------------------------------------- system packages (root)
# Installs what is missing with apt-get (an installed openvswitch-switch starts its service, as
# Debian's package does; nothing here stops it). $(1): the packages, $(2): the programs needed.
define apt_install
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "this needs root (network namespaces, private ovs-vswitchd)" >&2; exit 1; fi
	@missing=""; \
	for pkg in $(1); do \
	  if ! dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "install ok installed"; then \
	    missing="$$missing $$pkg"; fi; \
	done; \
	if [ -n "$$missing" ]; then \
	  command -v apt-get >/dev/null || { echo "missing packages:$$missing (no apt-get)" >&2; exit 1; }; \
	  echo "installing:$$missing"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	@for prog in $(2); do \
	  command -v $$prog >/dev/null || [ -x /usr/sbin/$$prog ] || { echo "$$prog not found" >&2; exit 1; }; \
	done
endef

OVS_PROGRAMS := ovs-vswitchd ovsdb-server ovsdb-tool ovs-vsctl ovs-ofctl ovs-appctl ip ethtool

K8S_PROGRAMS := iptables conntrack openssl nsenter curl

system-deps:
	$(call apt_install,$(APT_PACKAGES),$(OVS_PROGRAMS) $(K8S_PROGRAMS) vagrant ruby shellcheck ovn-northd ovn-controller ovn-nbctl ovn-sbctl curl)

demo-deps:
	$(call apt_install,$(DEMO_APT_PACKAGES),$(OVS_PROGRAMS))

k8s-deps:
	$(call apt_install,$(DEMO_APT_PACKAGES) $(K8S_APT_PACKAGES),$(OVS_PROGRAMS) $(K8S_PROGRAMS))

# ---------------------------------------------------------------- virtualenv
venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(VPY) ]; then \
	  $(PYTHON) -m venv $(VENV) || { \
	    if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	      echo "python venv support missing: installing python3-venv"; \
	      rm -rf $(VENV); \
	      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv && \
	      $(PYTHON) -m venv $(VENV); \
	    else exit 1; fi; }; \
	fi
	$(VPY) -m pip install $(PIP_FLAGS) -e '.[test,lint]'
	@touch $@

# ---------------------------------------------------------------- demo / bench / lint
# The example cluster as a live lab: two nodes (network namespaces with their own Open vSwitch),
# nine pods, the example policies; a node's installed flows; the reachability matrix measured
# with real packets next to the semantic evaluator's prediction; then the lab goes away
# (KEEP=1 leaves it up: `sdnctl lab status`, `ip netns exec sdnlab-x_a ...`, `sdnctl lab down`).
demo: demo-root demo-deps venv
	@[ -d $(EXAMPLES) ] || { echo "no $(EXAMPLES) directory" >&2; exit 1; }
	@run() { echo; echo "\$$ sdnctl $$*"; $(SDNCTL) "$$@"; }; \
	run lab up -f $(EXAMPLES) || exit 1; \
	status=0; \
	$(DEMO_SHOW)

# What both demos show once their lab is up: the matrices measured vs predicted, a node's flows
# with the probes' counters; then the lab goes (KEEP=1 leaves it up).
DEMO_SHOW = run lab matrix --check --port 80 --protocol TCP || status=1; \
	run lab matrix --check --port 81 --protocol UDP || status=1; \
	run flows show --node $(NODE) || status=1; \
	echo; echo "$$SPOOFGUARD_NOTE"; \
	case "$(KEEP)" in \
	  ""|0|no|false) run lab down || status=1 ;; \
	  *) $(MAKE) -s --no-print-directory lab-hint ;; \
	esac; \
	exit $$status

# The same example through a real control plane: objects written to kube-apiserver, pods started
# by each node's kubelet stand-in, the agent of deploy/ per node (KEEP=1 leaves it up).
demo-k8s: demo-root k8s-deps venv k8s
	@[ -d $(EXAMPLES) ] || { echo "no $(EXAMPLES) directory" >&2; exit 1; }
	@run() { echo; echo "\$$ sdnctl $$*"; $(SDNCTL) "$$@"; }; \
	run lab up --kubernetes -f $(EXAMPLES) || exit 1; \
	status=0; \
	run lab kubectl get nodes -o wide || status=1; \
	run lab kubectl get pods -A -o wide || status=1; \
	run lab kubectl get networkpolicies -A || status=1; \
	$(DEMO_SERVICES) \
	$(DEMO_SHOW)

# demo-k8s: a Service reached by its ClusterIP and by name (cluster DNS), the external host
# reached from a pod; then a policy (examples-k8s/dns-only-egress.yaml) that leaves x/a only
# DNS: the name still resolves, both connections are dropped; then the policy goes.
DEMO_SERVICES = ext=$$($(SDNCTL) lab status -o json | $(VPY) -c 'import json,sys; print(json.load(sys.stdin)["external"]["address"])'); \
	reach() { run lab exec x/a -- curl -sS -m 2 "$$@"; }; \
	run lab kubectl apply -f examples-k8s/service.yaml || status=1; \
	run lab kubectl get svc -n z web || status=1; \
	for i in 1 2 3 4 5 6 7 8 9 10; do $(SDNCTL) lab exec x/a -- curl -s -m 1 -o /dev/null http://web.z:8080/ && break; sleep 1; done; \
	for url in http://10.96.0.80:8080/ http://web.z:8080/ http://$$ext/; do reach $$url || status=1; done; \
	run lab apply -f examples-k8s/dns-only-egress.yaml || status=1; \
	run lab exec x/a -- getent hosts web.z || status=1; \
	for url in http://10.96.0.80:8080/ http://web.z:8080/ http://$$ext/; do \
	  if reach $$url; then status=1; else echo "(dropped: x/a may only ask the cluster DNS now)"; fi; done; \
	run lab delete -f examples-k8s/dns-only-egress.yaml || status=1; \
	run lab kubectl delete -f examples-k8s/service.yaml || status=1;

# What the counters of `flows show` after the probes hold, and what the spoof guard dropped
# before any probe (tests/lab_live.py captures it in a pod and counts it on the bridge).
define SPOOFGUARD_NOTE
The counters above are the packets of the probes to and from node $(NODE)'s pods. Dropped at table 10 (spoofguard, priority 0) before any probe: each pod's
kernel sends IPv6 router solicitations (ICMPv6 type 133, 70 bytes, to ff02::2), and MLD reports
and a duplicate-address check as IPv6 comes up, from its fe80:: link-local address. The pods here
have IPv4 addresses only, and the spoof guard passes only a pod's own MAC and addresses.
endef
export SPOOFGUARD_NOTE

# What to type next when KEEP=1 left the lab up: sdnctl by its path (it is not on PATH until
# `. .venv/bin/activate`); tests/test_docs.py runs the commands this prints.
lab-hint:
	@echo; echo "the lab is still up (KEEP=1). sdnctl is $(SDNCTL) (or run '. $(VENV)/bin/activate' first, then 'sdnctl'):"; \
	for cmd in "lab status" "lab pods" "lab matrix --port 80" "flows show --node $(NODE)" "lab down"; do \
	  echo "  $(SDNCTL) $$cmd"; done; \
	echo "the pods serve HTTP on their TCP ports: ip netns exec NETNS curl http://IP/ (NETNS, IP: lab pods)"

demo-root:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make demo needs root: it builds a lab of network namespaces with private Open vSwitch" \
	       "daemons and installs what is missing. Run it as root (sudo make demo)." >&2; exit 1; fi

# As root with OVN installed (installed here when missing and apt-get exists), S3 and S5 are also
# realized by OVN side by side (benchmarks/ovn.py: the `ovn` hook); OVN=0 turns that off.
bench: venv
	@$(VPY) -c 'import matplotlib' 2>/dev/null || $(VPY) -m pip install $(PIP_FLAGS) -e '.[bench]'
	@if [ "$$(id -u)" = 0 ] && [ "$(OVN)" != 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for pkg in $(BENCH_APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	  done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	  fi; \
	fi
	$(VPY) -m benchmarks $(if $(filter 1 yes true,$(QUICK)),--quick) \
	  $$(if [ "$$(id -u)" = 0 ] && [ "$(OVN)" != 0 ] && command -v ovn-northd >/dev/null; then \
	       echo --hook benchmarks.ovn:ovn_hook; fi) $(BENCH_ARGS)

# ruff and mypy (the `lint` extra; their settings and the chosen rules are in pyproject.toml).
lint: venv
	$(VPY) -m ruff check sdn flows tests benchmarks
	$(VPY) -m mypy

# ---------------------------------------------------------------- the lab on VMs (vagrant/)
# One k3s control plane and SDN_WORKERS workers (default 2) with the provider Vagrant picks
# (VAGRANT_DEFAULT_PROVIDER=libvirt|virtualbox). --no-parallel: the nodes join in name order,
# so their pod CIDRs are 10.244.0.0/24 (cp), .1 (worker-1), .2 (worker-2), ...
vagrant-up:
	cd vagrant && vagrant up --no-parallel

vagrant-down:
	cd vagrant && vagrant destroy -f

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
