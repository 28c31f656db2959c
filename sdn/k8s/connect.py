"""An official-client ApiClient from a kubeconfig, the in-cluster service account, or a URL."""

from __future__ import annotations

from typing import Any


def api_client(kubeconfig: str | None = None, *, url: str | None = None,
               retries: int = 1) -> Any:
    """`url` (a server without authentication: the tests' stand-in), else `kubeconfig`, else
    the in-cluster service account, else ~/.kube/config.

    urllib3 retries once (a pooled keep-alive connection the server closed); anything more
    is the informers' job: they back off with jitter instead of hammering a server that is
    down."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    if url:
        cfg.host = url
    elif kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException:
            config.load_kube_config(client_configuration=cfg)
    cfg.retries = retries
    return client.ApiClient(cfg)
