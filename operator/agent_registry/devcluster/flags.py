"""Command lines of etcd and kube-apiserver (pure: paths and ports in, argv out)."""

from __future__ import annotations

from pathlib import Path

from agent_registry.devcluster.pki import PkiFiles

# The issuer is what TokenReview checks a token's `iss` against; the in-cluster default keeps
# tokens looking like a real cluster's. The audience list defaults to the issuer.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"


def etcd_args(etcd: Path, *, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd),
        "--name=default",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--initial-cluster-state=new",
        # A throwaway cluster: durability is worth nothing, fsync latency is worth a lot on a
        # shared 2-core machine (and the data dir is on tmpfs when there is one).
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(
    kube_apiserver: Path,
    *,
    pki: PkiFiles,
    secure_port: int,
    etcd_port: int,
    cert_dir: Path,
) -> list[str]:
    return [
        str(kube_apiserver),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={secure_port}",
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        # The private key file also serves as the verification key (its public half is used).
        f"--service-account-key-file={pki.service_account_key}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--allow-privileged=true",
        # The endpoint reconciler refuses a loopback advertise address, and there is nobody to
        # reach the `kubernetes` Service's endpoints anyway (envtest does the same).
        "--endpoint-reconciler-type=none",
        # Flow control and profiling cost CPU and start time and test nothing of ours.
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--v=0",
    ]
