"""PgBouncer's client TLS under mocks, for the real stack files: a stack-owned CA signs a certificate for the
NLB's DNS name; the key reaches the hosts through Secrets Manager only; the CA is a (plain) stack output.

The harness computes what the tls provider would (real ECDSA keys, a real CSR, real certificates from the
program's inputs), so the chain can be checked, and used for a real TLS handshake on 127.0.0.1 the way
libpq's and node-postgres' sslmode=verify-full check it: the CA file, and the host name in the SAN.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from components.pgbouncer_tls import SECRET_CERT_FIELD, SECRET_KEY_FIELD
from tests.unit.harness import Resource, RunResult, named, of_type, one, run

STACKS = ("dev", "prod")
TLS_SECRET = "pgbouncer-client-tls"


@pytest.fixture(scope="module", params=STACKS)
def result(request: pytest.FixtureRequest) -> RunResult:
    return run(request.param)


def tls_resource(r: RunResult, typ: str, name: str) -> Resource:
    return named(of_type(r.resources, f"tls:index/{typ}"), name)


def certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def secret_document(r: RunResult) -> tuple[Resource, dict[str, str]]:
    version = one(
        [x for x in r.resources if x.name == TLS_SECRET], "aws:secretsmanager/secretVersion:SecretVersion"
    )
    return version, json.loads(version.inputs["secretString"])


def nlb_dns_name(r: RunResult) -> str:
    return str(r.outputs["pgbouncer_endpoint"])


def test_a_stack_ca_signs_an_ecdsa_p256_certificate_for_the_nlb(result: RunResult) -> None:
    ca_key = tls_resource(result, "privateKey:PrivateKey", "pgbouncer-ca-key")
    server_key = tls_resource(result, "privateKey:PrivateKey", "pgbouncer-server-key")
    for key in (ca_key, server_key):
        assert key.inputs["algorithm"] == "ECDSA" and key.inputs["ecdsaCurve"] == "P256"
    ca_res = tls_resource(result, "selfSignedCert:SelfSignedCert", "pgbouncer-ca")
    assert ca_res.inputs["isCaCertificate"] is True
    assert set(ca_res.inputs["allowedUses"]) == {"cert_signing", "crl_signing"}
    server_res = tls_resource(result, "locallySignedCert:LocallySignedCert", "pgbouncer-server")
    assert server_res.inputs["caCertPem"] == ca_res.state["certPem"]
    assert set(server_res.inputs["allowedUses"]) == {"digital_signature", "server_auth"}
    # Renewed by a pulumi up in the certificate's last 60 days, long before it lapses.
    assert 0 < server_res.inputs["earlyRenewalHours"] < server_res.inputs["validityPeriodHours"]

    ca, server = certificate(ca_res.state["certPem"]), certificate(server_res.state["certPem"])
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [nlb_dns_name(result)]
    public = server.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"


def test_the_key_reaches_the_hosts_only_through_an_encrypted_secret(result: RunResult) -> None:
    secret = one([x for x in result.resources if x.name == TLS_SECRET], "aws:secretsmanager/secret:Secret")
    assert secret.inputs["kmsKeyId"] == result.outputs["kms_key_arn"]
    version, document = secret_document(result)
    assert "secretString" in version.secret_inputs
    assert version.inputs["secretId"] == secret.state["arn"]  # a secret's id is its ARN
    server_key = tls_resource(result, "privateKey:PrivateKey", "pgbouncer-server-key").state["privateKeyPem"]
    server_cert = tls_resource(result, "locallySignedCert:LocallySignedCert", "pgbouncer-server").state[
        "certPem"
    ]
    assert document == {SECRET_KEY_FIELD: server_key, SECRET_CERT_FIELD: server_cert}
    template = one(
        [x for x in result.resources if x.name == "pgbouncer-host"], "aws:ec2/launchTemplate:LaunchTemplate"
    )
    script = gzip.decompress(base64.b64decode(template.inputs["userData"])).decode()
    assert f"--tls-secret {secret.state['arn']}" in script
    assert server_key not in script and "BEGIN EC PRIVATE KEY" not in script


def test_the_ca_certificate_is_a_plain_stack_output(result: RunResult) -> None:
    ca_pem = tls_resource(result, "selfSignedCert:SelfSignedCert", "pgbouncer-ca").state["certPem"]
    assert result.outputs["pgbouncer_ca_certificate"] == ca_pem
    assert "pgbouncer_ca_certificate" not in result.secret_outputs
    assert "PRIVATE KEY" not in json.dumps(result.outputs)


def _serve_once(cert_file: Path, key_file: Path) -> tuple[int, threading.Thread]:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def accept() -> None:
        with listener:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (OSError, ssl.SSLError):
                pass  # the client refused the certificate, or went away

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return port, thread


@pytest.mark.parametrize("hostname_ok", [True, False])
def test_verify_full_against_the_stack_ca_accepts_the_nlb_name_only(
    result: RunResult, tmp_path: Path, hostname_ok: bool
) -> None:
    _, document = secret_document(result)
    cert_file, key_file, ca_file = tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.pem"
    cert_file.write_text(document[SECRET_CERT_FIELD])
    key_file.write_text(document[SECRET_KEY_FIELD])
    ca_file.write_text(result.outputs["pgbouncer_ca_certificate"])
    port, thread = _serve_once(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=str(ca_file))  # CERT_REQUIRED + check_hostname
    hostname = nlb_dns_name(result) if hostname_ok else "db.example.com"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if hostname_ok:
            with client_ctx.wrap_socket(raw, server_hostname=hostname) as conn:
                assert conn.version() in ("TLSv1.2", "TLSv1.3")
                key = serialization.load_pem_private_key(document[SECRET_KEY_FIELD].encode(), None)
                assert isinstance(key, ec.EllipticCurvePrivateKey)
                conn.sendall(b"x")
        else:
            with pytest.raises(ssl.SSLCertVerificationError, match="match"):
                client_ctx.wrap_socket(raw, server_hostname=hostname)
    thread.join(timeout=10)


def test_client_tls_off_declares_no_ca_and_no_key() -> None:
    r = run("dev", {"pgbouncer.clientTls": False})
    assert [x for x in r.resources if x.typ.startswith("tls:")] == []
    assert [x for x in r.resources if x.name == TLS_SECRET] == []
    assert r.outputs["pgbouncer_ca_certificate"] is None
