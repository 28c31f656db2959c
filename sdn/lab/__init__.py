"""The local multi-node lab: nodes, pods and a fabric made of network namespaces on one machine.

Kept free of imports: `python -m sdn.lab.serve` runs once per pod and must start fast.
"""
