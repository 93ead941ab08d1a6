"""Certificates and keys of the local cluster, made once per stack folder.

One private CA signs the kube-apiserver serving certificate and the client
certificates. The admin certificate is in group system:masters, which RBAC
lets do anything. Files are only created when missing, so clients that
cached the CA keep working across restarts. Delete the pki folder (or the
whole stack folder) to make new ones.
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

#: Lifetime of every certificate. Test clusters live far shorter than this.
_VALIDITY = datetime.timedelta(days=3650)

#: First address of --service-cluster-ip-range, which in-cluster clients use.
SERVICE_IP = "10.0.0.1"

_SERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    """Paths of the files in one pki folder."""

    directory: Path

    def path(self, name: str) -> Path:
        """Return the path of file `name` in the folder."""
        return self.directory / name

    @property
    def ca_cert(self) -> Path:
        """CA certificate that clients trust and the apiserver checks."""
        return self.path("ca.crt")

    @property
    def service_account_key(self) -> Path:
        """RSA key that signs and verifies service account tokens."""
        return self.path("service-account.key")


def ensure_pki(directory: Path) -> Pki:
    """Create the CA, certificates and service account key if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    if not pki.ca_cert.exists() or not pki.path("ca.key").exists():
        _write_ca(pki)
    ca_key = serialization.load_pem_private_key(
        pki.path("ca.key").read_bytes(), password=None
    )
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.path('ca.key')} is not an EC key; delete {directory}")

    server_names: list[x509.GeneralName] = [
        x509.DNSName(name) for name in _SERVER_DNS_NAMES
    ]
    server_names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(SERVICE_IP)),
    ]
    issuer = (ca_cert, ca_key)
    _ensure_leaf(
        pki, "apiserver", issuer, common_name="kube-apiserver", san=server_names
    )
    _ensure_leaf(
        pki,
        "admin",
        issuer,
        common_name="local-stack-admin",
        organization="system:masters",
    )
    # kube-apiserver presents this certificate to kubelets, for example when
    # it proxies GET pods/log to the kubelet stand-in.
    _ensure_leaf(
        pki,
        "apiserver-kubelet-client",
        issuer,
        common_name="kube-apiserver-kubelet-client",
        organization="system:masters",
    )
    if not pki.service_account_key.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private_key(pki.service_account_key, key)
    return pki


def _write_ca(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "local-stack-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
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
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    write_private_key(pki.path("ca.key"), key)
    pki.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ensure_leaf(
    pki: Pki,
    stem: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    common_name: str,
    organization: str | None = None,
    san: list[x509.GeneralName] | None = None,
) -> None:
    """Write `<stem>.crt` and `<stem>.key` signed by `issuer`, unless present.

    A certificate with subject alternative names is a server certificate,
    any other one a client certificate.
    """
    ca_cert, ca_key = issuer
    cert_path = pki.path(f"{stem}.crt")
    key_path = pki.path(f"{stem}.key")
    if cert_path.exists() and key_path.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if san else ExtendedKeyUsageOID.CLIENT_AUTH
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(san), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    write_private_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_private_key(
    path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by its owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)
