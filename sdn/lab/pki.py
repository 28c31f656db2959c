"""The lab control plane's certificates, made with the openssl command line: one CA, the API
server's serving certificate, client certificates (CN = user, O = group, as Kubernetes reads
them), the service-account signing key pair, and kubeconfigs that use them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

DAYS = "3650"


class PkiError(RuntimeError):
    pass


def _openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise PkiError(f"openssl {' '.join(args[:2])} failed: {out.stderr.strip()[-400:]}")


def _key(path: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path.name, cwd=path.parent)
    path.chmod(0o600)


def make_ca(pki: Path) -> None:
    """ca.key / ca.crt, unless they exist; the service-account key pair sa.key / sa.pub."""
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "ca.crt").exists():
        return
    _key(pki / "ca.key")
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.crt", "-days", DAYS,
             "-subj", "/CN=sdn-lab-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=pki)
    _key(pki / "sa.key")
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def issue(pki: Path, name: str, *, cn: str, groups: tuple[str, ...] = (),
          dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), server: bool = False) -> tuple[Path, Path]:
    """A certificate NAME.crt (and NAME.key) signed by the CA; returns (crt, key)."""
    crt, key = pki / f"{name}.crt", pki / f"{name}.key"
    if crt.exists() and key.exists():
        return crt, key
    _key(key)
    subject = f"/CN={cn}" + "".join(f"/O={g}" for g in groups)
    _openssl("req", "-new", "-key", key.name, "-out", f"{name}.csr", "-subj", subject, cwd=pki)
    ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
           f"extendedKeyUsage={'serverAuth,clientAuth' if server else 'clientAuth'}"]
    sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", crt.name, "-days", DAYS, "-extfile", f"{name}.ext", cwd=pki)
    (pki / f"{name}.csr").unlink()
    (pki / f"{name}.ext").unlink()
    return crt, key


def kubeconfig(path: Path, *, server: str, ca: Path, user: str, cert: Path | None = None,
               key: Path | None = None, token: str | None = None, cluster: str = "sdn-lab") -> Path:
    """A kubeconfig for one user (client certificate or bearer token) on one cluster."""
    creds: dict = {}
    if cert is not None and key is not None:
        creds = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        creds = {"token": token}
    doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
           "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca)}}],
           "users": [{"name": user, "user": creds}],
           "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user}}],
           "current-context": f"{user}@{cluster}"}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
