"""Run the real Pulumi program (`__main__.py`) against Pulumi mocks, for a real stack file.

    resources = run_program("prod")                       # every resource the program registers
    outputs = program_outputs("prod")                     # the stack outputs, resolved (secrets unwrapped)
    result = run("prod", {"replicaCount": 0})             # both at once: result.resources, result.outputs
    settings = settings_for("dev", {"backupRetentionDays": 40})   # only the settings object

`run_program(stack, overrides)` loads `Pulumi.<stack>.yaml` itself (never a copy), applies `overrides`
(config key -> value: `backupRetentionDays`, `spike-land-db:backupRetentionDays`, `aws:region`, or a dotted
path into a section such as `pgbouncer.hostCount`; the value None deletes the key), sets the config with
`pulumi.runtime.set_all_config`, installs the mocks (preview=False), runs `__main__.py` with runpy in a
fresh Pulumi runtime state (new settings, new root Stack, own contextvars) and waits for every output.
A settings error or an exception in the program propagates unchanged, carrying the resources registered
before it as `declared_resources` (see `failing_run`).

`Resource` records each registration: `typ`, `name`, `inputs` (as the provider would receive them;
Output values resolved, secrets unwrapped), and `provider` (the provider reference `urn::id`, or "" for
the default provider).
Its `state` holds the inputs plus the mock's computed outputs (ids, ARNs, endpoints), and
`secret_inputs` names the top-level inputs that reached the engine as secrets; `urn`, `parent` (its URN)
and `aliases` (the URNs its aliases resolve to) are what the engine would match against a deployed stack.
Helpers: `of_type(resources, "aws:rds/instance:Instance")`, `one(resources, typ)`, `named(resources, name)`.

The mocks answer the invokes the program makes (availability zones, caller identity, region, partition,
IAM policy documents, SSM parameters, ...) with plausible values; add a branch in `_Mocks.call` when a
component needs another invoke.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import datetime
import gc
import hashlib
import json
import runpy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.stack import wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await

from dbctl.stackconfig.settings import PROJECT, REGION_KEY, StackSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_ID = "123456789012"
PARTITION = "aws"


@dataclass(frozen=True)
class Resource:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str = ""
    state: dict[str, Any] = field(default_factory=dict)
    # Top-level inputs the program marked secret (Output.secret / secret config / additional_secret_outputs
    # do not show here: this is what the engine would store encrypted as an input).
    secret_inputs: frozenset[str] = frozenset()
    # Resource options the engine sees (mocks do not act on them).
    protect: bool = False
    # The URN the engine would give it, its parent's ("" under the stack) and the URNs its aliases name
    # (what a stack deployed before a move knows it by: the engine adopts that resource, not replaces it).
    urn: str = ""
    parent: str = ""
    aliases: frozenset[str] = frozenset()
    # The URNs it waits for (depends_on and the resources its inputs come from), as the engine orders them.
    dependencies: frozenset[str] = frozenset()

    @property
    def provider_name(self) -> str:
        """The logical name of the explicit provider this resource uses ("" for the default provider)."""
        urn = self.provider.split("::")
        return urn[3] if len(urn) > 3 else ""


@dataclass(frozen=True)
class RunResult:
    resources: list[Resource]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]


def stack_file(stack: str) -> Path:
    return ROOT / f"Pulumi.{stack}.yaml"


def stack_config(stack: str, overrides: Mapping[str, object] | None = None) -> dict[str, Any]:
    """The stack file's `config:` map (full keys, `spike-land-db:x` / `aws:region`) with overrides applied."""
    path = stack_file(stack)
    if not path.exists():
        raise FileNotFoundError(f"no stack file {path}")
    loaded = yaml.load(path.read_text(), Loader=yaml.CSafeLoader) or {}  # libyaml: read on every run()
    config: dict[str, Any] = dict(loaded.get("config") or {})
    for key, value in (overrides or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        namespace, _, path_str = full.partition(":")
        head, *rest = path_str.split(".")
        top = f"{namespace}:{head}"
        if not rest:
            if value is None:
                config.pop(top, None)
            else:
                config[top] = value
            continue
        section = json.loads(json.dumps(config.get(top) or {}))
        node = section
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(rest[-1], None)
        else:
            node[rest[-1]] = value
        config[top] = section
    return config


def _raw_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    prefix = f"{PROJECT}:"
    raw = {k.removeprefix(prefix): v for k, v in config.items() if k.startswith(prefix)}
    if REGION_KEY in config:
        raw[REGION_KEY] = config[REGION_KEY]
    return raw


def settings_for(stack: str, overrides: Mapping[str, object] | None = None) -> StackSettings:
    """Only build the settings object for a real stack file plus overrides (no Pulumi runtime)."""
    return load_settings(stack, _raw_settings(stack_config(stack, overrides)))


def _to_config_string(value: Any) -> str:
    """Pulumi hands config to the program as strings; structured values as JSON (like the CLI does)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _plain(value: Any) -> Any:
    """Make mock-deserialized values plain Python: secrets unwrapped (unknowns stay as they are)."""
    if isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig:
        return _plain(value.get("value"))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _hex(seed: str, n: int = 17) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def _secret_keys(struct: Any) -> frozenset[str]:
    """Top-level property names whose serialized value is a Pulumi secret."""
    keys = set()
    for key, value in struct.fields.items():
        inner = value.struct_value.fields if value.HasField("struct_value") else {}
        sig = inner.get(rpc._special_sig_key)
        if sig is not None and sig.string_value == rpc._special_secret_sig:
            keys.add(key)
    return frozenset(keys)


@dataclass(frozen=True)
class _Registration:
    """What the monitor sees of a registration that `Mocks.new_resource` is not given."""

    secret_inputs: frozenset[str]
    protect: bool
    urn: str
    parent: str
    aliases: frozenset[str]
    dependencies: frozenset[str]


class _Monitor(pulumi_mocks.MockMonitor):
    """The stock mock monitor, noting which inputs arrive as secrets before they are unwrapped, the URN,
    the parent and the aliases."""

    def __init__(self, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self._mocks = mocks

    def _alias_urn(self, request: Any, alias: Any) -> str:
        """The URN an alias names: a URN as it is, or a spec's parts defaulting to the resource's own."""
        if alias.urn:
            return str(alias.urn)
        spec = alias.spec
        parent = "" if spec.noParent else (spec.parentUrn or request.parent)
        urn = self.make_urn(parent, spec.type or request.type, spec.name or request.name)
        head, project, rest = urn.split("::", 2)
        stack = head.removeprefix("urn:pulumi:")
        return f"urn:pulumi:{spec.stack or stack}::{spec.project or project}::{rest}"

    def RegisterResource(self, request: Any) -> Any:
        self._mocks.pending[(request.type, request.name)] = _Registration(
            secret_inputs=_secret_keys(request.object),
            protect=bool(request.protect),
            urn=self.make_urn(request.parent, request.type, request.name),
            parent=str(request.parent),
            aliases=frozenset(
                [self._alias_urn(request, a) for a in request.aliases] + list(request.aliasURNs)
            ),
            dependencies=frozenset(str(d) for d in request.dependencies),
        )
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, region: str) -> None:
        self.region = region
        self.resources: list[Resource] = []
        self.pending: dict[tuple[str, str], _Registration] = {}

    def _arn(self, service: str, resource: str, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:{PARTITION}:{service}:{region}:{ACCOUNT_ID}:{resource}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        inputs = _plain(dict(args.inputs))
        typ, name = args.typ, args.name
        rid, extra = self._computed(typ, name, inputs)
        state = {**inputs, **extra}
        seen = self.pending.pop((typ, name), None)
        self.resources.append(
            Resource(
                typ=typ,
                name=name,
                inputs=inputs,
                provider=args.provider or "",
                state=state,
                secret_inputs=seen.secret_inputs if seen else frozenset(),
                protect=seen.protect if seen else False,
                urn=seen.urn if seen else "",
                parent=seen.parent if seen else "",
                aliases=seen.aliases if seen else frozenset(),
                dependencies=seen.dependencies if seen else frozenset(),
            )
        )
        return rid, state

    def _computed(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A plausible id and the computed outputs AWS would return for a resource."""
        h = _hex(f"{typ}/{name}")
        if typ.startswith("pulumi:providers:"):
            return f"{name}-provider-id", {}
        if typ == "random:index/randomPassword:RandomPassword":
            length = int(inputs.get("length", 32))
            return name, {"result": ("Pw0rd-" + h * 4)[:length], "bcryptHash": "$2a$10$mock"}
        if typ == "random:index/randomBytes:RandomBytes":
            length = int(inputs.get("length", 16))
            raw = hashlib.sha256(name.encode()).digest()[:length]
            return name, {"base64": base64.b64encode(raw).decode(), "hex": raw.hex()}
        if typ == "random:index/randomId:RandomId":
            length = int(inputs.get("byteLength", 4))
            hx = hashlib.sha256(name.encode()).hexdigest()[: 2 * length]
            b64 = base64.urlsafe_b64encode(bytes.fromhex(hx)).decode().rstrip("=")
            return name, {"hex": hx, "dec": str(int(hx, 16)), "b64Url": b64, "b64Std": b64, "id": b64}
        if typ == "random:index/randomString:RandomString":
            length = int(inputs.get("length", 8))
            return name, {"result": (h * 4)[:length].lower()}
        if typ.startswith("tls:index/"):
            return name, _tls_outputs(typ, inputs)
        if typ == "aws:kms/key:Key":
            kid = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-8{h[:3]}-{h[:12]}"
            return kid, {"arn": self._arn("kms", f"key/{kid}"), "keyId": kid}
        if typ == "aws:kms/alias:Alias":
            return inputs.get("name", name), {"arn": self._arn("kms", str(inputs.get("name", name)))}
        if typ == "aws:ec2/vpc:Vpc":
            vid = f"vpc-{h}"
            return vid, {"arn": self._arn("ec2", f"vpc/{vid}"), "defaultSecurityGroupId": f"sg-{_hex(vid)}"}
        if typ == "aws:ec2/subnet:Subnet":
            sid = f"subnet-{h}"
            return sid, {"arn": self._arn("ec2", f"subnet/{sid}")}
        if typ == "aws:ec2/securityGroup:SecurityGroup":
            sid = f"sg-{h}"
            return sid, {"arn": self._arn("ec2", f"security-group/{sid}")}
        if typ == "aws:ec2/routeTable:RouteTable":
            return f"rtb-{h}", {"arn": self._arn("ec2", f"route-table/rtb-{h}")}
        if typ == "aws:ec2/vpcEndpoint:VpcEndpoint":
            return f"vpce-{h}", {"arn": self._arn("ec2", f"vpc-endpoint/vpce-{h}")}
        if typ == "aws:secretsmanager/secret:Secret":
            sname = str(inputs.get("name") or inputs.get("namePrefix", f"{name}-"))
            return self._arn("secretsmanager", f"secret:{sname}-{h[:6]}"), {
                "arn": self._arn("secretsmanager", f"secret:{sname}-{h[:6]}"),
                "name": sname,
            }
        if typ == "aws:iam/role:Role":
            rname = str(inputs.get("name") or f"{name}-{h[:7]}")
            return rname, {"arn": self._arn("iam", f"role/{rname}", regional=False), "name": rname}
        if typ == "aws:iam/policy:Policy":
            pname = str(inputs.get("name") or f"{name}-{h[:7]}")
            arn = self._arn("iam", f"policy/{pname}", regional=False)
            return arn, {"arn": arn, "name": pname}
        if typ == "aws:iam/instanceProfile:InstanceProfile":
            pname = str(inputs.get("name") or f"{name}-{h[:7]}")
            return pname, {"arn": self._arn("iam", f"instance-profile/{pname}", regional=False)}
        if typ == "aws:rds/instance:Instance":
            ident = str(inputs.get("identifier") or f"{inputs.get('identifierPrefix', name)}{h[:8]}")
            address = f"{ident}.c{h[:10]}.{self.region}.rds.amazonaws.com"
            port = int(inputs.get("port", 5432))
            return f"db-{h.upper()[:26]}", {
                "identifier": ident,
                "address": address,
                "endpoint": f"{address}:{port}",
                "port": port,
                # RDS picks the AZ when none is asked for: the first of the region's zones, here.
                "availabilityZone": inputs.get("availabilityZone") or f"{self.region}a",
                "arn": self._arn("rds", f"db:{ident}"),
                "resourceId": f"db-{h.upper()[:26]}",
                "hostedZoneId": "Z29XKXDKYMONMX",
            }
        if typ in ("aws:rds/parameterGroup:ParameterGroup", "aws:rds/subnetGroup:SubnetGroup"):
            gname = str(inputs.get("name") or f"{inputs.get('namePrefix', name)}{h[:10]}")
            kind = "pg" if "parameter" in typ else "subgrp"
            return gname, {"name": gname, "arn": self._arn("rds", f"{kind}:{gname}")}
        if typ == "aws:cloudwatch/logGroup:LogGroup":
            lname = str(inputs.get("name") or f"{name}-{h[:7]}")
            return lname, {"arn": self._arn("logs", f"log-group:{lname}")}
        if typ == "aws:sns/topic:Topic":
            tname = str(inputs.get("name") or f"{name}-{h[:7]}")
            return self._arn("sns", tname), {"arn": self._arn("sns", tname), "name": tname}
        if typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            aname = str(inputs.get("name") or f"{name}-{h[:7]}")
            return aname, {"arn": self._arn("cloudwatch", f"alarm:{aname}")}
        if typ == "aws:imagebuilder/image:Image":
            arn = self._arn("imagebuilder", f"image/{name}/1.0.0/1")
            ami = {"image": f"ami-{h}", "region": self.region, "accountId": ACCOUNT_ID, "name": name}
            return arn, {"arn": arn, "outputResources": [{"amis": [ami], "containers": []}]}
        if typ == "aws:ec2/launchTemplate:LaunchTemplate":
            return f"lt-{h}", {"arn": self._arn("ec2", f"launch-template/lt-{h}"), "latestVersion": 1}
        if typ == "aws:lb/loadBalancer:LoadBalancer":
            dns = f"{name}-{h[:8]}.elb.{self.region}.amazonaws.com"
            arn = self._arn("elasticloadbalancing", f"loadbalancer/net/{name}/{h[:16]}")
            return arn, {"arn": arn, "dnsName": dns, "arnSuffix": f"net/{name}/{h[:16]}"}
        if typ == "aws:lb/targetGroup:TargetGroup":
            arn = self._arn("elasticloadbalancing", f"targetgroup/{name}/{h[:16]}")
            return arn, {"arn": arn, "arnSuffix": f"targetgroup/{name}/{h[:16]}"}
        if typ == "aws:backup/vault:Vault":
            vname = str(inputs.get("name") or name)
            return vname, {"arn": self._arn("backup", f"backup-vault:{vname}")}
        if typ == "aws:cloudwatch/eventRule:EventRule":
            # The provider names a rule from its prefix (+ 26 characters); its ARN ends in rule/<name>.
            ename = str(inputs.get("name") or f"{inputs.get('namePrefix', name)}{_hex(name, 26)}")
            return ename, {"arn": self._arn("events", f"rule/{ename}"), "name": ename}
        if typ == "aws:backup/plan:Plan":
            return h, {"arn": self._arn("backup", f"backup-plan:{h}")}
        if typ.startswith("aws:"):
            service = typ.split(":")[1].split("/")[0]
            return f"{name}-{h[:8]}", {"arn": self._arn(service, f"{name}-{h[:8]}")}
        return f"{name}-id", {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        # Pulumi's mock monitor iterates a returned tuple's failures, so a (result, None) pair breaks it.
        result, failures = self._call(args)
        return result, failures or []

    def _call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        token, a = args.token, _plain(dict(args.args))
        region = self.region
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            zones = [f"{region}{s}" for s in "abc"]
            return {"names": zones, "zoneIds": [f"euw1-az{i}" for i in (1, 2, 3)], "id": region}, None
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            arn = f"arn:{PARTITION}:iam::{ACCOUNT_ID}:user/ci"
            return {"accountId": ACCOUNT_ID, "arn": arn, "userId": "AIDAMOCK", "id": ACCOUNT_ID}, None
        if token == "aws:index/getRegion:getRegion":
            return {
                "region": region,
                "name": region,
                "id": region,
                "endpoint": f"ec2.{region}.amazonaws.com",
            }, None
        if token == "aws:index/getPartition:getPartition":
            return {"partition": PARTITION, "dnsSuffix": "amazonaws.com", "id": PARTITION}, None
        if token == "aws:iam/getPolicyDocument:getPolicyDocument":
            return {"json": json.dumps(_policy_json(a)), "id": "policy"}, None
        if token == "aws:ssm/getParameter:getParameter":
            pname = str(a.get("name", ""))
            value = "ami-0123456789abcdef0" if "ami" in pname else "mock-value"
            return {"name": pname, "value": value, "type": "String", "id": pname, "arn": pname}, None
        if token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-0123456789abcdef0", "architecture": "arm64", "name": "al2023-ami-mock"}, None
        if token == "aws:kms/getKey:getKey":
            return {"arn": self._arn("kms", "key/mock"), "id": "mock"}, None
        if token == "aws:ec2/getVpc:getVpc":
            return {"id": a.get("id", "vpc-0123456789abcdef0"), "cidrBlock": "10.0.0.0/16"}, None
        if token == "aws:ec2/getSubnet:getSubnet":
            return {
                "id": a.get("id"),
                "availabilityZone": f"{region}a",
                "vpcId": "vpc-0123456789abcdef0",
            }, None
        return {}, None


_CURVES: dict[str, ec.EllipticCurve] = {
    "P224": ec.SECP224R1(),
    "P256": ec.SECP256R1(),
    "P384": ec.SECP384R1(),
    "P521": ec.SECP521R1(),
}


def _pem_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), "the mocks sign with ECDSA keys only"
    return key


def _subject(fields: Mapping[str, Any] | None) -> x509.Name:
    oids = {"commonName": NameOID.COMMON_NAME, "organization": NameOID.ORGANIZATION_NAME}
    return x509.Name([x509.NameAttribute(oids[k], str(v)) for k, v in (fields or {}).items() if k in oids])


def _tls_outputs(typ: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """What the tls provider computes, really computed: keys, a CSR, self-signed and CA-signed certificates.

    So a test can check the chain (the server certificate verifies against the CA's key, names the NLB).
    """
    if typ == "tls:index/privateKey:PrivateKey":
        assert inputs.get("algorithm") == "ECDSA", "the mocks make ECDSA keys only"
        key = ec.generate_private_key(_CURVES[str(inputs.get("ecdsaCurve", "P224"))])
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"privateKeyPem": pem, "publicKeyPem": public_pem.decode()}
    if typ == "tls:index/certRequest:CertRequest":
        request = x509.CertificateSigningRequestBuilder().subject_name(_subject(inputs.get("subject")))
        if inputs.get("dnsNames"):
            sans = [x509.DNSName(n) for n in inputs["dnsNames"]]
            request = request.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        csr = request.sign(_pem_key(inputs["privateKeyPem"]), hashes.SHA256())
        return {"certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}
    if typ == "tls:index/selfSignedCert:SelfSignedCert":
        own_key = _pem_key(inputs["privateKeyPem"])
        cert = _certificate(
            inputs,
            _subject(inputs.get("subject")),
            _subject(inputs.get("subject")),
            own_key.public_key(),
            own_key,
            [],
        )
    elif typ == "tls:index/locallySignedCert:LocallySignedCert":
        csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
        ca = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
        names = [e.value for e in csr.extensions if isinstance(e.value, x509.SubjectAlternativeName)]
        csr_key = csr.public_key()
        assert isinstance(csr_key, ec.EllipticCurvePublicKey)
        cert = _certificate(
            inputs, csr.subject, ca.subject, csr_key, _pem_key(inputs["caPrivateKeyPem"]), names
        )
    else:
        raise AssertionError(f"the mocks do not know {typ}")
    return {"certPem": cert.public_bytes(serialization.Encoding.PEM).decode(), "readyForRenewal": False}


def _certificate(
    inputs: Mapping[str, Any],
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    sans: Sequence[x509.SubjectAlternativeName],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=int(inputs["validityPeriodHours"])))
        .add_extension(x509.BasicConstraints(ca=bool(inputs.get("isCaCertificate")), path_length=None), True)
    )
    for san in sans:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(signer, hashes.SHA256())


def _policy_json(args: Mapping[str, Any]) -> dict[str, Any]:
    """Render getPolicyDocument's statements into IAM JSON, like the real function."""
    statements = []
    for st in args.get("statements") or []:
        out: dict[str, Any] = {"Effect": st.get("effect", "Allow")}
        if st.get("sid"):
            out["Sid"] = st["sid"]
        if st.get("actions"):
            out["Action"] = st["actions"]
        if st.get("resources"):
            out["Resource"] = st["resources"]
        for p in st.get("principals") or []:
            out.setdefault("Principal", {})[p["type"]] = p["identifiers"]
        for c in st.get("conditions") or []:
            out.setdefault("Condition", {}).setdefault(c["test"], {})[c["variable"]] = c["values"]
        statements.append(out)
    return {"Version": "2012-10-17", "Statement": statements}


async def _resolve(value: Any) -> tuple[Any, bool]:
    """Resolve an exported value to plain Python; report whether any part of it was secret."""
    if isinstance(value, pulumi.Output):
        inner, secret = await _resolve(await value.future(with_unknowns=True))
        return inner, secret or bool(await value.is_secret())
    if isinstance(value, dict):
        items = [(k, await _resolve(v)) for k, v in value.items()]
        return {k: v for k, (v, _) in items}, any(s for _, (_, s) in items)
    if isinstance(value, list | tuple):
        parts = [await _resolve(v) for v in value]
        return [v for v, _ in parts], any(s for _, s in parts)
    return value, False


def _run_isolated(stack: str, config: dict[str, Any]) -> RunResult:
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # asyncio.run() elsewhere in this process left no current loop; Pulumi needs one
        asyncio.set_event_loop(asyncio.new_event_loop())
    region = str(config.get(REGION_KEY, "eu-west-1"))
    mocks = _Mocks(region)
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_all_config({k: _to_config_string(v) for k, v in config.items()}, [])
    pulumi_mocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=_Monitor(mocks))
    runtime_settings.SETTINGS.outputs.clear()
    try:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        _sync_await(wait_for_rpcs())
    except Exception as e:
        e.declared_resources = list(mocks.resources)  # type: ignore[attr-defined]
        raise
    root = runtime_settings.get_root_resource()
    exported: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})
    outputs: dict[str, Any] = {}
    secrets: set[str] = set()
    for key, value in exported.items():
        resolved, secret = _sync_await(_resolve(value))
        outputs[key] = resolved
        if secret:
            secrets.add(key)
    _sync_await(wait_for_rpcs())
    return RunResult(resources=list(mocks.resources), outputs=outputs, secret_outputs=frozenset(secrets))


def _run_in_own_context(stack: str, config: dict[str, Any]) -> RunResult:
    # A fresh contextvars context per run: Pulumi keeps settings, config and the root Stack in them.
    result = contextvars.copy_context().run(_run_isolated, stack, config)
    _keep_out_of_later_collections()
    return result


def _keep_out_of_later_collections() -> None:
    """Collect the finished program's garbage, then freeze what is left out of the collector's later passes.

    A program run leaves tens of thousands of objects in reference cycles (Pulumi's outputs, tasks and
    resources), which only a full collection frees, and each full collection walks every object alive: the
    modules the first program imports (pulumi_aws's generated classes, about 350,000 objects) and every
    memoised result. Left to itself the collector walked them again and again, a third of the unit suite's
    time. What is alive right after a run and this collection (modules, results) is frozen: cycles among
    those objects are never reclaimed, no loss for modules and memoised results. Not after a failed run:
    its traceback still holds the program's objects.
    """
    gc.collect()
    gc.freeze()


def run(
    stack: str, overrides: Mapping[str, object] | None = None, stack_name: str | None = None
) -> RunResult:
    """Run `__main__.py` for `stack` under mocks: resources, resolved outputs, names of secret outputs.

    `stack_name` runs the program as a stack of that name over `Pulumi.<stack>.yaml` (default: `stack`),
    e.g. the longest name settings allow, to check generated AWS names against their limits.

    Successful runs are memoised per (stack file contents, overrides, stack name) within the test session,
    so the many tests that read the same stack share one run: treat the result as read-only. A test that
    patches anything the program uses must call `run_fresh` instead.
    """
    config = stack_config(stack, overrides)
    name = stack_name or stack
    key = (name, json.dumps(config, sort_keys=True, default=str))
    cached = _RUNS.get(key)
    if cached is None:
        cached = _run_in_own_context(name, config)
        _RUNS[key] = cached
    return cached


_RUNS: dict[tuple[str, str], RunResult] = {}


def run_fresh(stack: str, overrides: Mapping[str, object] | None = None) -> RunResult:
    """Like `run`, but always a new run (not memoised)."""
    config = stack_config(stack, overrides)
    return _run_in_own_context(stack, config)


def run_program(stack: str, overrides: Mapping[str, object] | None = None) -> list[Resource]:
    """Every resource `__main__.py` registers for the real `Pulumi.<stack>.yaml` plus overrides."""
    return run(stack, overrides).resources


def program_outputs(stack: str, overrides: Mapping[str, object] | None = None) -> dict[str, Any]:
    """The stack outputs (resolved; secrets unwrapped, see `run(...).secret_outputs` for which)."""
    return run(stack, overrides).outputs


def failing_run(
    stack: str, overrides: Mapping[str, object] | None = None
) -> tuple[Exception, list[Resource]]:
    """Run a program expected to fail: its exception and the resources registered before it."""
    try:
        run(stack, overrides)
    except Exception as e:
        return e, list(getattr(e, "declared_resources", []))
    raise AssertionError(f"the {stack} program with {overrides} did not fail")


def of_type(resources: Sequence[Resource], typ: str) -> list[Resource]:
    return [r for r in resources if r.typ == typ]


def one(resources: Sequence[Resource], typ: str) -> Resource:
    """The single resource of `typ`; fails listing what there is when there are none or several."""
    found = of_type(resources, typ)
    if len(found) != 1:
        raise AssertionError(f"expected exactly one {typ}, found {len(found)}: {[r.name for r in found]}")
    return found[0]


def named(resources: Sequence[Resource], name: str) -> Resource:
    found = [r for r in resources if r.name == name]
    if len(found) != 1:
        raise AssertionError(f"expected exactly one resource named {name!r}, found {len(found)}")
    return found[0]
