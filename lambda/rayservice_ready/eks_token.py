"""The EKS bearer token: a presigned STS GetCallerIdentity request, as `aws eks get-token`
makes it (the format aws-iam-authenticator documents). Signing is local."""

from __future__ import annotations

import base64
import os
from typing import Any

import botocore.session
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from gate_errors import GateError

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
# The authenticator rejects presigned URLs valid for longer than this.
TOKEN_URL_EXPIRES_S = 60


def sts_url(region: str) -> str:
    """The regional STS GetCallerIdentity URL that the token presigns."""
    return f"https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"


def build_eks_token(cluster_name: str, region: str, credentials: Any) -> str:
    """An EKS bearer token: "k8s-aws-v1." + base64url(presigned STS URL), padding stripped.

    The cluster name travels as the signed `x-k8s-aws-id` header, so a token made for one
    cluster is refused by another. `credentials` has access_key, secret_key and token
    (botocore credentials); no call to STS is made here.
    """
    request = AWSRequest(method="GET", url=sts_url(region), headers={CLUSTER_ID_HEADER: cluster_name})
    SigV4QueryAuth(credentials, "sts", region, expires=TOKEN_URL_EXPIRES_S).add_auth(request)
    encoded = base64.urlsafe_b64encode(request.url.encode("utf-8")).decode("ascii")
    return TOKEN_PREFIX + encoded.rstrip("=")


def eks_token_from_environment(cluster_name: str) -> str:
    """A token signed with the function's own role (credentials and AWS_REGION from the runtime)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise GateError("AWS_REGION is not set: cannot choose the STS endpoint for the EKS token")
    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise GateError("no AWS credentials found to sign the EKS token")
    return build_eks_token(cluster_name, region, credentials.get_frozen_credentials())
