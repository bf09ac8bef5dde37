"""testca.py - a test certificate authority (python3-cryptography) for the
tests that need real PKIX: MTA-STS's policy server and its sink MXes.

    ca = TestCA(directory)            # writes directory/ca.pem (the trust anchor)
    cert, key = ca.issue("mx1", ["mx1.example.test"])            # valid, signed by the CA
    cert, key = ca.issue("old", ["mx1.example.test"], expired=True)
    cert, key = ca.self_signed("self", ["mx1.example.test"])     # not from the CA
    ca.ca_file                        # the PEM file relayd's deliver.ca_file names

Every file is PEM; keys are EC P-256 (fast to make).  Certificates carry the
names as subjectAltName dNSName (IP addresses as iPAddress) and serverAuth.
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCA"]


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _san(names):
    out = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)


class TestCA:
    def __init__(self, directory, name="relayd test CA"):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.key = _key()
        subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder()
                     .subject_name(subj).issuer_name(subj)
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                                  crl_sign=True, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False,
                                                  key_agreement=False, encipher_only=False,
                                                  decipher_only=False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                                    critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = os.path.join(directory, "ca.pem")
        _write(self.ca_file, self.cert.public_bytes(serialization.Encoding.PEM))

    def _leaf(self, label, names, issuer_name, issuer_key, key, expired):
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            before, after = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
        else:
            before, after = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
             .issuer_name(issuer_name)
             .public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(before).not_valid_after(after)
             .add_extension(_san(names), critical=False)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        if issuer_key is not key:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False)
        cert = b.sign(issuer_key, hashes.SHA256())
        cpath = os.path.join(self.dir, label + "-cert.pem")
        kpath = os.path.join(self.dir, label + "-key.pem")
        _write(cpath, cert.public_bytes(serialization.Encoding.PEM))
        _write(kpath, key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        return cpath, kpath

    def issue(self, label, names, expired=False):
        """A certificate for names signed by the CA: (cert_file, key_file)."""
        return self._leaf(label, names, self.cert.subject, self.key, _key(), expired)

    def self_signed(self, label, names):
        """A self-signed certificate for names (no chain to the CA)."""
        key = _key()
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        return self._leaf(label, names, issuer, key, key, False)
