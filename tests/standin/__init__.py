"""The API stand-in: a small Kubernetes API server in Python, kept only to inject faults a real
kube-apiserver cannot be made to produce on demand (watch streams cut at any byte, random
response chunking, a history window of a chosen size, bookmarks every few milliseconds).
The informers' unit tests use it (tests/test_k8s_informer.py); everything else runs against
the real control plane (tests/kube_support.py)."""
