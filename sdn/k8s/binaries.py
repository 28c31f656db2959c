"""Where the Kubernetes control-plane binaries are: built by `make k8s` (tools/build.sh) from the
Go module proxy into a cache outside the repository, keyed by release."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV_BIN = "SDN_K8S_BIN"  # a directory holding the binaries (overrides the build cache)
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl",
            "coredns")
_BUILD = Path(__file__).resolve().parents[2] / "tools" / "build.sh"


class BinariesMissing(RuntimeError):
    """The control-plane binaries are not built; the message says how to build them."""


def bin_dir() -> Path:
    """The directory of the built binaries ($SDN_K8S_BIN, else the cache tools/build.sh uses)."""
    if os.environ.get(ENV_BIN):
        return Path(os.environ[ENV_BIN])
    if not _BUILD.exists():
        raise BinariesMissing(f"no tools/build.sh next to this installation: set {ENV_BIN} to a directory "
                              f"holding {', '.join(BINARIES)}")
    out = subprocess.run(["bash", str(_BUILD), "--print"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BinariesMissing(f"tools/build.sh --print failed: {out.stderr.strip()}")
    return Path(out.stdout.strip().splitlines()[-1])


def binary(name: str) -> str:
    """The path of one binary; BinariesMissing (naming `make k8s`) when it is not built."""
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise BinariesMissing(f"{path} is missing: build the Kubernetes binaries with `make k8s` "
                              f"(minutes from the Go module proxy, then cached)")
    return str(path)
