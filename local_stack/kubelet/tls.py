"""Self-signed serving certificate of the log endpoint.

The API server does not verify kubelet certificates unless it runs with
``--kubelet-certificate-authority``, so a self-signed one is enough. It is
made once per state folder and reused while it is valid for another day.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from local_stack.pki import write_private_key

logger = logging.getLogger(__name__)

VALID_DAYS = 365


def ensure_certificate(state_dir: Path, node_name: str) -> tuple[Path, Path]:
    """Return the certificate and key files in ``state_dir``, making new ones
    when they are missing or expire within a day."""
    cert_path = state_dir / "kubelet.crt"
    key_path = state_dir / "kubelet.key"
    if cert_path.exists() and key_path.exists() and _valid_for_a_day(cert_path):
        return cert_path, key_path

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"{node_name}@local-kubelet")]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(node_name),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    write_private_key(key_path, key)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    logger.info("serving certificate created", extra={"path": str(cert_path)})
    return cert_path, key_path


def _valid_for_a_day(cert_path: Path) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    remaining = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return remaining > datetime.timedelta(days=1)
