"""The execution role of a Lambda function in the VPC: assumable by Lambda only, with AWS's managed
AWSLambdaVPCAccessExecutionRole (ENIs in the private subnets, its own log group). Each function adds its own
inline policy for what it does. Resource names are the callers' own (`<name>-fn`, `<name>-fn-vpc`), so their
URNs do not change."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

VPC_EXECUTION_POLICY = "service-role/AWSLambdaVPCAccessExecutionRole"


def vpc_function_role(
    name: str, name_prefix: str, partition: str, opts: pulumi.ResourceOptions
) -> aws.iam.Role:
    role = aws.iam.Role(
        f"{name}-fn",
        name_prefix=name_prefix[:38],  # IAM's name_prefix limit
        assume_role_policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
        opts=opts,
    )
    aws.iam.RolePolicyAttachment(
        f"{name}-fn-vpc",
        role=role.name,
        policy_arn=f"arn:{partition}:iam::aws:policy/{VPC_EXECUTION_POLICY}",
        opts=opts,
    )
    return role
