"""The local control plane: kube-apiserver and etcd built from the Go module proxy, kubectl from
PyPI, started on 127.0.0.1 for tests and the demo (see docs/local-control-plane.md)."""

from agent_registry.devcluster.errors import DevClusterError
from agent_registry.devcluster.session import KubeCluster, KubectlError, open_cluster

__all__ = ["DevClusterError", "KubeCluster", "KubectlError", "open_cluster"]
