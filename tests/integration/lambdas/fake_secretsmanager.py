"""Secrets Manager for the rotation function's tests: moto's secrets and versions, plus the service's own
side of a rotation, which moto does not model as the documents describe.
Each behaviour below cites its document (docs/verification.md's table lists them):

- RotateSecret refuses to start while an AWSPENDING label sits on a version other than AWSCURRENT's: "If the
  AWSPENDING staging label is present but not attached to the same version as AWSCURRENT, then any later
  invocation of RotateSecret assumes that a previous rotation request is still in progress and returns an
  error" (RotateSecret API reference, description).
- RotateSecret stores the configuration (DescribeSecret then says RotationEnabled) and creates the new
  version's AWSPENDING label before it invokes the function (the template's createSecret finds its token in
  DescribeSecret's VersionIdsToStages, yet GetSecretValue of it raises ResourceNotFoundException:
  aws-samples/aws-secrets-manager-rotation-lambdas, SecretsManagerRotationTemplate/lambda_function.py,
  lambda_handler and create_secret). That version holds no value until createSecret puts one.
- RotateImmediately true: the four steps in order, createSecret, setSecret, testSecret, finishSecret (the
  same template; "How rotation works" in the user guide). A failure stops there and leaves AWSPENDING ("When
  rotation is unsuccessful, the AWSPENDING staging label might be attached to an empty secret version").
- RotateImmediately false: "Secrets Manager tests the rotation configuration by running the testSecret step
  of the Lambda rotation function. The test creates an AWSPENDING version of the secret and then removes it"
  (RotateSecret API reference, RotateImmediately; pulumi_aws/secretsmanager/secret_rotation.py,
  `rotate_immediately`). The documents do not say what that version holds: `test_version` picks no value
  (as a rotation's version before createSecret) or AWSCURRENT's (moto 5's choice), and the tests run both.
  A failed test is a failed RotateSecret (the `pulumi up` that declared the rotation fails) and, as above,
  leaves its AWSPENDING label.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Literal

from botocore.exceptions import ClientError

Invoke = Callable[[dict[str, str]], None]  # the rotation function, called with Secrets Manager's event
TestVersion = Literal["no value", "AWSCURRENT's value"]
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


class FakeSecretsManager:
    """moto's client (`client`), with RotateSecret and value-less AWSPENDING versions as AWS has them."""

    def __init__(self, client: Any, invoke: Invoke | None = None) -> None:
        self.client = client
        self.exceptions = client.exceptions
        self.invoke = invoke
        self.rotation_enabled: set[str] = set()
        self.empty: dict[str, str] = {}  # secret ARN -> its value-less AWSPENDING version (one at a time)
        self.invocations: list[dict[str, str]] = []
        self.started: dict[str, str] = {}  # secret ARN -> the version id of its latest rotation

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def _error(self, code: str, message: str, operation: str) -> ClientError:
        error: ClientError = getattr(self.exceptions, code)(
            {"Error": {"Code": code, "Message": message}}, operation
        )
        return error

    def _arn(self, secret_id: str) -> str:
        return str(self.client.describe_secret(SecretId=secret_id)["ARN"])

    # ---- the API calls the function makes, with value-less versions

    def describe_secret(self, SecretId: str) -> dict[str, Any]:
        arn = self._arn(SecretId)
        metadata = dict(self.client.describe_secret(SecretId=SecretId))
        versions = {v: list(stages) for v, stages in metadata["VersionIdsToStages"].items()}
        if arn in self.empty:
            for stages in versions.values():
                if "AWSPENDING" in stages:
                    stages.remove("AWSPENDING")
            versions[self.empty[arn]] = ["AWSPENDING"]
        return {**metadata, "RotationEnabled": arn in self.rotation_enabled, "VersionIdsToStages": versions}

    def get_secret_value(self, SecretId: str, **kwargs: str) -> dict[str, Any]:
        empty = self.empty.get(self._arn(SecretId))
        if empty is not None and (
            kwargs.get("VersionId") == empty
            or (kwargs.get("VersionStage") == "AWSPENDING" and "VersionId" not in kwargs)
        ):
            raise self._error(
                "ResourceNotFoundException",
                f"Secrets Manager can't find the specified secret value for VersionId: {empty}",
                "GetSecretValue",
            )
        if (
            not kwargs
        ):  # "If you don't specify either a VersionStage or VersionId, then Secrets Manager returns
            kwargs = {"VersionStage": "AWSCURRENT"}  # the AWSCURRENT version" (GetSecretValue reference)
        return dict(self.client.get_secret_value(SecretId=SecretId, **kwargs))

    def put_secret_value(self, SecretId: str, ClientRequestToken: str, **kwargs: Any) -> dict[str, Any]:
        arn = self._arn(SecretId)
        if self.empty.get(arn) == ClientRequestToken:
            del self.empty[arn]  # createSecret fills the version RotateSecret created
        return dict(
            self.client.put_secret_value(SecretId=SecretId, ClientRequestToken=ClientRequestToken, **kwargs)
        )

    def update_secret_version_stage(self, SecretId: str, **kwargs: str) -> dict[str, Any]:
        arn = self._arn(SecretId)
        if kwargs.get("VersionStage") == "AWSPENDING" and kwargs.get("RemoveFromVersionId") == self.empty.get(
            arn
        ):
            del self.empty[arn]
            return {"ARN": arn}
        return dict(self.client.update_secret_version_stage(SecretId=SecretId, **kwargs))

    # ---- the service's side

    def pending_version(self, secret_id: str) -> str | None:
        """The version AWSPENDING is on, unless that is AWSCURRENT's too (a finished rotation)."""
        for version, stages in self.describe_secret(secret_id)["VersionIdsToStages"].items():
            if "AWSPENDING" in stages and "AWSCURRENT" not in stages:
                return str(version)
        return None

    def start_rotation(self, secret_id: str) -> str:
        """What RotateSecret does before it invokes the function: the configuration, and a new AWSPENDING
        version with no value. Returns its version id (the steps' ClientRequestToken)."""
        arn = self._arn(secret_id)
        if self.pending_version(arn) is not None:
            raise self._error(
                "InvalidRequestException",
                "A previous rotation isn't complete. That rotation will be reattempted.",
                "RotateSecret",
            )
        self.rotation_enabled.add(arn)
        token = str(uuid.uuid4())
        self.empty[arn] = token
        self.started[arn] = token
        return token

    def run_step(self, arn: str, token: str, step: str) -> None:
        event = {"SecretId": arn, "ClientRequestToken": token, "Step": step}
        self.invocations.append(event)
        assert self.invoke is not None, "FakeSecretsManager(invoke=...) runs the rotation function"
        self.invoke(event)

    def rotate_secret(
        self, SecretId: str, RotateImmediately: bool = True, test_version: TestVersion = "no value"
    ) -> dict[str, str]:
        arn = self._arn(SecretId)
        token = self.start_rotation(arn)
        if RotateImmediately:
            for step in STEPS:
                self.run_step(arn, token, step)
            return {"ARN": arn, "VersionId": token}
        if test_version == "AWSCURRENT's value":
            current = self.client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"]
            del self.empty[arn]
            self.client.put_secret_value(
                SecretId=arn, ClientRequestToken=token, SecretString=current, VersionStages=["AWSPENDING"]
            )
        self.run_step(arn, token, "testSecret")  # raises: RotateSecret fails, AWSPENDING stays
        if arn in self.empty:
            del self.empty[arn]
        else:
            self.client.update_secret_version_stage(
                SecretId=arn, VersionStage="AWSPENDING", RemoveFromVersionId=token
            )
        return {"ARN": arn}
