"""A throwaway certificate authority for TLS registries and token servers in tests.

Why a CA and not one self-signed certificate: clients under test must be given a *trust
root* (skopeo's `--dest-cert-dir` with `ca.crt`, an `ssl.SSLContext` in Python), exactly as
a site would hand them its private CA. Several servers (registry, token issuer) can then share
that one root, and a client that forgets to load it fails the way it would in the field.

Certificates follow what Go's crypto/x509 (Distribution, skopeo) and OpenSSL's strict mode
demand: SAN entries (no Common Name fallback), a CA with basicConstraints/keyUsage marked
critical, subject/authority key identifiers, serverAuth on the leaf.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class ServerCert:
    """A leaf certificate and its unencrypted PKCS#8 key, both PEM files."""
    cert: Path
    key: Path
    hosts: tuple[str, ...]

    def server_context(self) -> ssl.SSLContext:
        """An `ssl` server context presenting this certificate (for in-process servers)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "regcarve tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


class CertAuthority:
    """A CA (ECDSA P-256) whose files live in `folder`:

    - `folder/ca/ca.crt`: the CA certificate (`ca_pem`). `folder/ca` (`cert_dir`) holds
      nothing else, so it can be handed to skopeo/containers as a certs.d directory: there,
      every `*.crt` is a root and a stray `*.key` would be taken for a client key.
    - `folder/servers/<name>.crt` / `.key`: leaf certificates made by `issue`.
    """

    def __init__(self, folder: Path, name: str = "regcarve test CA", days: int = 2):
        self.folder = Path(folder)
        self.cert_dir = self.folder / "ca"
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        (self.folder / "servers").mkdir(exist_ok=True)
        self.days = days
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        public = self._key.public_key()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self.cert_dir / "ca.crt"
        self.ca_pem.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str = "localhost", hosts: tuple[str, ...] = DEFAULT_HOSTS) -> ServerCert:
        """A server certificate for `hosts` (IP addresses or DNS names), written as
        `servers/<name>.crt` and `.key`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0] if hosts else name)).issuer_name(self.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=self.days))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        cert_path = self.folder / "servers" / f"{name}.crt"
        key_path = cert_path.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return ServerCert(cert_path, key_path, tuple(hosts))

    def client_context(self) -> ssl.SSLContext:
        """An `ssl` client context that trusts this CA only (not the system roots)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        return ctx
