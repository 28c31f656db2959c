"""The world side of sdn-netpol: manifests and the policy model, the controller, the agent,
the CNI plugin, the lab and the CLI (flows/ is the pure OpenFlow side)."""

import warnings

# eventlet (imported by os-ken and by the `ovs` library) loads dnspython for its green DNS, and
# dnspython touches cryptography's deprecated DSA classes at import: a CryptographyDeprecationWarning
# on every start of the controller or the agent about code this project never calls.
warnings.filterwarnings("ignore", module=r"dns(\.|$)")
