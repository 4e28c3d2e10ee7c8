"""``appliance certs init|issue``: the appliance's own certificate authority for the gRPC link between
the orchestrator and workers on other hosts.

``init`` makes the CA (``ca.crt``, and ``ca.key`` readable by its owner only); ``issue NAME --host H``
makes ``NAME.crt``/``NAME.key`` signed by it, valid for each host name and address given, usable both
to serve (a worker) and to present as a client (the orchestrator, under mutual TLS). Copy ``ca.crt``
and a worker's pair to that worker; the CA key stays where it was made."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import sys
from pathlib import Path

DEFAULT_DIR = Path("/etc/appliance/tls")
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest that browsers and most TLS stacks accept for a leaf
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CertError(Exception):
    pass


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "appliance"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject, issuer, public_key, days: int):
    from cryptography import x509

    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def create_ca(directory: Path, *, force: bool = False) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if key_path.exists() and not force:
        raise CertError(f"{key_path} exists: a new CA would orphan every certificate it signed (--force)")
    key = _key()
    name = _name("appliance CA")
    cert = (
        _builder(name, name, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write(key_path, _pem_key(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert_path


def _load_ca(directory: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(
            f"no CA in {directory} ({exc.filename} is missing): run `appliance certs init`"
        ) from None
    except PermissionError as exc:
        raise CertError(f"cannot read {exc.filename}: run as root") from None
    return cert, key


def _san(hosts: list[str]):
    from cryptography import x509

    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})", host):
                raise CertError(f"{host!r} is neither an IP address nor a host name") from None
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(directory: Path, name: str, hosts: list[str], *, days: int = LEAF_DAYS) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not NAME.match(name):
        raise CertError(f"{name!r}: a name is 1-64 of A-Z a-z 0-9 _ . -")
    if not hosts:
        raise CertError("give at least one --host (the name or address the orchestrator dials)")
    ca_cert, ca_key = _load_ca(directory)
    key = _key()
    cert = (
        _builder(_name(name), ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    _write(key_path, _pem_key(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert_path, key_path


def cmd_certs(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    try:
        if args.action == "init":
            path = create_ca(directory, force=args.force)
            print(f"CA certificate {path} (its key {directory / 'ca.key'} stays on this host)")
        else:
            cert, key = issue(directory, args.name, args.host, days=args.days)
            print(f"{cert} and {key}, signed by {directory / 'ca.crt'}, for {', '.join(args.host)}")
    except (CertError, PermissionError) as exc:
        print(f"appliance certs: {exc}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("certs", help="the appliance's own CA for gRPC over TLS between hosts")
    csub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = csub.add_parser("init", help="create the CA (ca.crt, ca.key)")
    q.add_argument("--force", action="store_true", help="replace an existing CA")
    q = csub.add_parser("issue", help="a certificate and key signed by the CA")
    q.add_argument("name", help="file name stem: NAME.crt and NAME.key")
    q.add_argument("--host", action="append", default=[], help="a name or address it is valid for (repeat)")
    q.add_argument("--days", type=int, default=LEAF_DAYS)
    for q in csub.choices.values():
        q.add_argument("--dir", default=str(DEFAULT_DIR), help=f"where the CA lives (default: {DEFAULT_DIR})")
    p.set_defaults(func=cmd_certs)
