"""Example deploy-time values for the EKS profile, as the CDK stacks would pass them once
resolved (the charts tests' shared input)."""

from __future__ import annotations

from ray_serve_ha.charts.accelerators import ACCELERATORS
from ray_serve_ha.charts.profiles import EksDeployment, eks_rayservice_inputs
from ray_serve_ha.charts.rayservice import RayServiceInputs

API_KEYS_ARN = "arn:aws:secretsmanager:us-east-2:111122223333:secret:api-keys-AbCdEf"


def example_eks_deployment(accelerator: str, **overrides) -> EksDeployment:
    return EksDeployment(**{
        "accelerator": ACCELERATORS[accelerator],
        "instance_types": (ACCELERATORS[accelerator].default_instance_type,),
        "region": "us-east-2",
        "redis_endpoint": "master.gcs.example.cache.amazonaws.com",
        "redis_port": 6379,
        "gcs_store_auth_secret": "arn:aws:secretsmanager:us-east-2:111122223333:secret:gcs-auth-AbCdEf",
        "hugging_face_token_secret": "ray-serve-ha/hugging-face-token",
        "ray_image": f"111122223333.dkr.ecr.us-east-2.amazonaws.com/ray-serve:{accelerator}",
        "gradio_image": "111122223333.dkr.ecr.us-east-2.amazonaws.com/gradio:1",
        "api_keys_secret": API_KEYS_ARN,
        **overrides,
    })


def eks_inputs(accelerator: str, **overrides) -> RayServiceInputs:
    """The RayService chart's inputs for that deployment."""
    return eks_rayservice_inputs(example_eks_deployment(accelerator, **overrides))
