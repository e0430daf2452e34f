"""Certificates and keys of a local control plane.

One CA signs the apiserver's serving certificate (127.0.0.1 and localhost) and the admin client
certificate (group system:masters, so the admin bypasses RBAC like kubeadm's admin.conf). A
separate RSA key signs and verifies ServiceAccount tokens (TokenRequest / TokenReview).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class PkiFiles:
    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.root / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.root / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.root / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.root / "admin.key"

    @property
    def service_account_key(self) -> Path:
        """Private key: --service-account-signing-key-file and (its public half) -key-file."""
        return self.root / "sa.key"

    def complete(self) -> bool:
        files = (self.ca_cert, self.serving_cert, self.serving_key, self.admin_cert)
        return all(p.is_file() for p in (*files, self.admin_key, self.service_account_key))


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def generate(root: Path) -> PkiFiles:
    """Writes a fresh CA, serving cert, admin client cert and ServiceAccount key into root."""
    root.mkdir(parents=True, exist_ok=True)
    files = PkiFiles(root)

    ca_key = _ec_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-registry-local-ca")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.ca_key, _pem_key(ca_key), private=True)
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))

    serving_key = _ec_key()
    serving_cert = (
        _builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            ca_name,
            serving_key.public_key(),
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes"),
                    x509.DNSName("kubernetes.default"),
                    x509.DNSName("kubernetes.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.serving_key, _pem_key(serving_key), private=True)
    _write(files.serving_cert, serving_cert.public_bytes(serialization.Encoding.PEM))

    admin_key = _ec_key()
    admin_cert = (
        _builder(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "agent-registry-admin"),
                ]
            ),
            ca_name,
            admin_key.public_key(),
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.admin_key, _pem_key(admin_key), private=True)
    _write(files.admin_cert, admin_cert.public_bytes(serialization.Encoding.PEM))

    # RSA: the ServiceAccount token signer of kube-apiserver expects RSA or ECDSA; RSA is what every
    # TokenReview consumer (and kubeadm) uses.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(files.service_account_key, _pem_key(sa_key), private=True)
    return files
