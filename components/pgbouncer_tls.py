"""The PgBouncer tier's client-facing TLS: a CA of the stack's own and the certificate it signs for the NLB.

With pulumi-tls (no AWS service involved, so nothing to pay or to wait for):
- the CA: an ECDSA P-256 key and a self-signed CA certificate (10 years). Its certificate is the stack
  output `pgbouncer_ca_certificate`: apps trust exactly it (`sslmode=verify-full&sslrootcert=<file>`);
- the server certificate: an ECDSA P-256 key and a certificate the CA signs for the NLB's DNS name (a SAN:
  libpq and node-postgres check it under verify-full), valid a year and renewed by any `pulumi up` in its
  last 60 days. PgBouncer serves it on 6543; the hosts read key and certificate from a Secrets Manager
  secret (the helper writes them to tmpfs, key 0600), never from user data.

ECDSA P-256 keeps each handshake cheap (serverless clients connect per request); PgBouncer's default
`client_tls_protocols = secure` allows TLS 1.2 and 1.3 only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

KEY_ALGORITHM = "ECDSA"
KEY_CURVE = "P256"
CA_VALIDITY_HOURS = 10 * 365 * 24
SERVER_VALIDITY_HOURS = 365 * 24
SERVER_EARLY_RENEWAL_HOURS = 60 * 24
# The secret's JSON keys (hosts/pgbouncer_authfile.py reads them on the host).
SECRET_KEY_FIELD = "private_key_pem"  # noqa: S105 (a JSON key, not a secret)
SECRET_CERT_FIELD = "certificate_pem"  # noqa: S105


@dataclass(frozen=True)
class ClientTlsMaterial:
    ca_certificate_pem: pulumi.Output[str]  # public: the stack output apps trust
    server_certificate_pem: pulumi.Output[str]  # public
    server_private_key_pem: pulumi.Output[str]  # secret


def client_tls_material(
    name: str, stack: str, dns_name: pulumi.Input[str], parent: pulumi.Resource
) -> ClientTlsMaterial:
    """Declare the stack's CA and the NLB's server certificate (children of `parent`)."""
    opts = pulumi.ResourceOptions(parent=parent)
    ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm=KEY_ALGORITHM, ecdsa_curve=KEY_CURVE, opts=opts)
    ca = tls.SelfSignedCert(
        f"{name}-ca",
        private_key_pem=ca_key.private_key_pem,
        is_ca_certificate=True,
        max_path_length=0,
        set_subject_key_id=True,
        subject=tls.SelfSignedCertSubjectArgs(
            common_name=f"spike-land-{stack} PgBouncer CA", organization="Spike Land"
        ),
        validity_period_hours=CA_VALIDITY_HOURS,
        allowed_uses=["cert_signing", "crl_signing"],
        opts=opts,
    )
    server_key = tls.PrivateKey(
        f"{name}-server-key", algorithm=KEY_ALGORITHM, ecdsa_curve=KEY_CURVE, opts=opts
    )
    request = tls.CertRequest(
        f"{name}-server",
        private_key_pem=server_key.private_key_pem,
        # The name clients check is the SAN; a CN holds at most 64 characters, an NLB's DNS name may not.
        subject=tls.CertRequestSubjectArgs(
            common_name=f"spike-land-{stack} PgBouncer", organization="Spike Land"
        ),
        dns_names=[dns_name],
        opts=opts,
    )
    server = tls.LocallySignedCert(
        f"{name}-server",
        cert_request_pem=request.cert_request_pem,
        ca_private_key_pem=ca_key.private_key_pem,
        ca_cert_pem=ca.cert_pem,
        validity_period_hours=SERVER_VALIDITY_HOURS,
        early_renewal_hours=SERVER_EARLY_RENEWAL_HOURS,
        allowed_uses=["digital_signature", "server_auth"],
        opts=opts,
    )
    return ClientTlsMaterial(
        ca_certificate_pem=ca.cert_pem,
        server_certificate_pem=server.cert_pem,
        server_private_key_pem=pulumi.Output.secret(server_key.private_key_pem),
    )
