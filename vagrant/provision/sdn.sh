#!/usr/bin/env bash
# Our package from the synced project folder into a venv (/opt/sdn/venv: sdnctl, sdn-cni), the
# agent's settings from deploy/configmap.yaml (the very file the DaemonSet mounts), the lab's
# tool (vagrant/tools/sdnvm.py) and the agent's systemd unit. Run again after editing the
# code: `vagrant rsync && vagrant provision --provision-with sdn,cni,agent`.
# shellcheck source=SCRIPTDIR/lib.sh
. "${SDN_SRC:-/vagrant}/vagrant/provision/lib.sh"
need_env SDN_NODE SDN_NODE_IP SDN_CP_IP

[ -f "$SDN_SRC/pyproject.toml" ] || die "$SDN_SRC has no pyproject.toml: is the project folder synced?"

log "package sources: $SDN_SRC -> $SDN_HOME/src"
# pip builds in the source tree (build/, *.egg-info): build from a copy, never in the user's
# checkout.
install -d -m 755 "$SDN_HOME" "$SDN_HOME/bin" "$SDN_HOME/lib" "$SDN_ETC"
rm -rf "$SDN_HOME/src"
install -d -m 755 "$SDN_HOME/src"
cp -a "$SDN_SRC/pyproject.toml" "$SDN_SRC/README.md" "$SDN_SRC/flows" "$SDN_SRC/sdn" "$SDN_HOME/src/"
find "$SDN_HOME/src" -name __pycache__ -prune -exec rm -rf {} +

log "venv $SDN_VENV"
[ -x "$SDN_VENV/bin/python" ] || python3 -m venv "$SDN_VENV"
"$SDN_VENV/bin/pip" install -q --disable-pip-version-check "$SDN_HOME/src"
# the same version number as before: make sure this copy of the code is the one installed
"$SDN_VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$SDN_HOME/src"
ln -sf "$SDN_VENV/bin/sdnctl" /usr/local/bin/sdnctl

log "tools: sdnvm"
install -m 644 "$SDN_SRC/vagrant/tools/sdnvm.py" "$SDN_SRC/vagrant/tools/pod_probe.py" "$SDN_HOME/lib/"
printf '#!/bin/sh\nexec %s %s "$@"\n' "$SDN_VENV/bin/python" "$SDN_HOME/lib/sdnvm.py" > "$SDNVM"
chmod 755 "$SDNVM"
ln -sf "$SDNVM" /usr/local/bin/sdnvm

log "settings: $SDN_ETC/sdn.yaml from deploy/configmap.yaml"
"$SDNVM" configmap-settings "$SDN_SRC/deploy/configmap.yaml" > "$SDN_ETC/sdn.yaml.new"
mv "$SDN_ETC/sdn.yaml.new" "$SDN_ETC/sdn.yaml"
[ "$(setting enforce)" = host ] || die "the Vagrant lab runs enforce: host only (deploy/configmap.yaml)"
[ "$(setting pod_cidr)" = node ] || die "the Vagrant lab needs podCIDR: node (k3s assigns the nodes' CIDRs)"

log "agent unit"
printf 'NODE_NAME=%s\n' "$SDN_NODE" > "$SDN_ETC/agent.env"
install -m 644 "$SDN_SRC/vagrant/units/sdn-agent.service" /etc/systemd/system/
systemctl daemon-reload
"$SDN_VENV/bin/sdnctl" --version
