# The Vagrant lab's plan, apart from Vagrant: which machines, their addresses and roles, and
# what each provisioning script is told. The Vagrantfile turns it into machines;
# tests/test_vagrant.py prints it with plain ruby (no Vagrant, no provider).
#
# Settings, from the environment (read when the Vagrantfile is loaded: pass the same ones to
# every vagrant command of one lab, as `make vagrant-up` / `make vagrant-down` do):
#   SDN_WORKERS      number of worker nodes (default 2); the control plane is `cp`
#   SDN_BOX          the box (default debian/bookworm64: Debian 12, libvirt and VirtualBox)
#   SDN_NETWORK      first three octets of the private network (default 192.168.56):
#                    cp is .10, worker-N is .(10+N)
#   SDN_MEMORY       MiB per VM (default 2048);  SDN_CPUS  vCPUs per VM (default 2)
#   SDN_K3S_VERSION  the k3s release (default below)
#   SDN_POD_IMAGE    the example pods' image (default python:3.12-alpine; any image with a
#                    python3 on its PATH serves: it runs sdn/lab/serve.py from a ConfigMap)
require "json"
require "securerandom"

module SdnLab
  DEFAULTS = {
    "SDN_WORKERS" => "2",
    "SDN_BOX" => "debian/bookworm64",
    "SDN_NETWORK" => "192.168.56",
    "SDN_MEMORY" => "2048",
    "SDN_CPUS" => "2",
    "SDN_K3S_VERSION" => "v1.31.4+k3s1",
    "SDN_POD_IMAGE" => "python:3.12-alpine",
  }.freeze
  MAX_WORKERS = 20
  CONTROL_PLANE = "cp".freeze
  # The synced project folder inside every VM (the repository root, one level above this file).
  SRC = "/vagrant".freeze
  # Applied to the cluster as they are, from the synced folder: the agent's CRD, identity and
  # settings (deploy/daemonset.yaml is not applied: see vagrant/README.md, "The agent").
  DEPLOY_MANIFESTS = %w[
    deploy/crd-v1alpha1-networkpolicys.yaml
    deploy/rbac.yaml
    deploy/configmap.yaml
  ].freeze
  # Rendered for the cluster by `sdnvm render-examples` (vagrant/tools/sdnvm.py).
  EXAMPLES = "examples".freeze

  class Error < StandardError; end

  def self.setting(env, key)
    value = env.fetch(key, "").to_s.strip
    value.empty? ? DEFAULTS.fetch(key) : value
  end

  def self.integer(env, key, min, max)
    text = setting(env, key)
    raise Error, "#{key}=#{text}: expected a whole number" unless text =~ /\A\d+\z/
    n = text.to_i
    raise Error, "#{key}=#{n}: expected #{min} to #{max}" unless n.between?(min, max)
    n
  end

  def self.network(env)
    prefix = setting(env, "SDN_NETWORK")
    octets = prefix.split(".")
    unless octets.length == 3 && octets.all? { |o| o =~ /\A\d{1,3}\z/ && o.to_i <= 255 }
      raise Error, "SDN_NETWORK=#{prefix}: expected three octets, such as 192.168.56"
    end
    prefix
  end

  # [{name, role, index, ip}], the control plane first, then worker-1 .. worker-N.
  def self.nodes(env = ENV)
    workers = integer(env, "SDN_WORKERS", 0, MAX_WORKERS)
    net = network(env)
    [{ "name" => CONTROL_PLANE, "role" => "server", "index" => 0, "ip" => "#{net}.10" }] +
      (1..workers).map do |i|
        { "name" => "worker-#{i}", "role" => "agent", "index" => i, "ip" => "#{net}.#{10 + i}" }
      end
  end

  # The two shared secrets, made once per lab on the host and kept in Vagrant's state
  # directory (.vagrant/, or $VAGRANT_DOTFILE_PATH): the k3s join token, and the token of the
  # agent's identity (deploy/rbac.yaml's ServiceAccount, known to the API server through a
  # static token file: vagrant/provision/k3s.sh). Nothing travels back from the VMs.
  def self.secrets(state_dir)
    path = File.join(state_dir, "sdn-lab-secrets.json")
    if File.exist?(path)
      data = JSON.parse(File.read(path))
      return data if data["k3s_token"].to_s =~ /\A\h{32,}\z/ && data["agent_token"].to_s =~ /\A\h{32,}\z/
    end
    data = { "k3s_token" => SecureRandom.hex(24), "agent_token" => SecureRandom.hex(24) }
    Dir.mkdir(state_dir) unless Dir.exist?(state_dir)
    File.open(path, File::WRONLY | File::CREAT | File::TRUNC, 0o600) { |f| f.write(JSON.generate(data)) }
    data
  end

  # What every provisioning script of `node` is told (vagrant/provision/*.sh read these).
  def self.provision_env(env, node, secrets)
    all = nodes(env)
    workers = all.reject { |n| n["role"] == "server" }.map { |n| n["name"] }
    {
      "SDN_SRC" => SRC,
      "SDN_NODE" => node["name"],
      "SDN_ROLE" => node["role"],
      "SDN_NODE_INDEX" => node["index"].to_s,
      "SDN_NODE_IP" => node["ip"],
      "SDN_CP_IP" => all.first["ip"],
      # the example pods spread over the workers (over cp when there are none)
      "SDN_POD_NODES" => (workers.empty? ? [CONTROL_PLANE] : workers).join(","),
      "SDN_K3S_VERSION" => setting(env, "SDN_K3S_VERSION"),
      "SDN_POD_IMAGE" => setting(env, "SDN_POD_IMAGE"),
      "SDN_DEPLOY_MANIFESTS" => DEPLOY_MANIFESTS.join(" "),
      "SDN_EXAMPLES" => EXAMPLES,
      "K3S_TOKEN" => secrets["k3s_token"],
      "SDN_AGENT_TOKEN" => secrets["agent_token"],
    }
  end

  # The provisioning steps, in order: [name, script under vagrant/provision, roles].
  STEPS = [
    ["base", "base.sh", %w[server agent]],        # packages, kernel modules, Open vSwitch
    ["sdn", "sdn.sh", %w[server agent]],          # our package, settings, tools, units
    ["bridge", "bridge.sh", %w[server agent]],    # br-sdn + tunnel (sdn/node_setup.py, as the agent)
    ["k3s", "k3s.sh", %w[server agent]],          # k3s server on cp, agent on the workers
    ["deploy", "deploy.sh", %w[server]],          # deploy/: CRD, RBAC, ConfigMap
    ["cni", "cni.sh", %w[server agent]],          # sdn-cni + 10-sdn.conflist (sdn.k8s.install_cni)
    ["agent", "agent.sh", %w[server agent]],      # sdn-agent unit: sdnctl agent
    ["examples", "examples.sh", %w[server]],      # examples/ namespaces, pods, policies
  ].freeze

  def self.steps(role)
    STEPS.select { |_, _, roles| roles.include?(role) }.map { |name, script, _| [name, script] }
  end

  # The whole plan as data (what tests/test_vagrant.py checks).
  def self.plan(env = ENV)
    nodes(env).map do |n|
      n.merge("steps" => steps(n["role"]).map(&:first))
    end
  end
end

if $PROGRAM_NAME == __FILE__
  begin
    puts JSON.pretty_generate(SdnLab.plan)
  rescue SdnLab::Error => e
    warn "error: #{e.message}"
    exit 2
  end
end
