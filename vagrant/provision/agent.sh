#!/usr/bin/env bash
# The agent: `sdnctl agent`, the DaemonSet's command, as a systemd unit (units/sdn-agent.service;
# vagrant/README.md, "The agent", says why not the DaemonSet itself). Done when it is ready:
# every informer has listed once and the bridge runs the tables of that state (/readyz).
# shellcheck source=SCRIPTDIR/lib.sh
. "${SDN_SRC:-/vagrant}/vagrant/provision/lib.sh"
need_env SDN_NODE

log "sdn-agent"
systemctl enable sdn-agent.service
systemctl restart sdn-agent.service
ready="http://127.0.0.1:$(setting metrics_port)/readyz"
wait_for 180 "the agent to be ready ($ready; see journalctl -u sdn-agent)" curl -fsS "$ready"
"$SDN_VENV/bin/sdnctl" status
