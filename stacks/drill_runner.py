"""The HA drill as a CodeBuild project inside the VPC: it reaches the private API endpoint
and the internal load balancer, deletes the RayService's head pod under load and fails
when a request fails. The pipeline's post-deploy step starts it; so can anyone:
`aws codebuild start-build --project-name <cluster>-ha-drill`."""

from __future__ import annotations

import ast
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from ray_serve_ha.charts.rbac import HA_DRILL_GROUP, ha_drill_rbac
from ray_serve_ha.constructs.api_keys import HA_DRILL

ROOT = Path(__file__).resolve().parent.parent
# What the project runs: `python -m local.drill --backend kubernetes`, after installing this.
DRILL_MODULE = "local.drill.__main__"
DRILL_REQUIREMENTS = "local/drill/requirements.txt"
# Imported by the drill only for its local backend (the local stack: Ray, Redis, network
# namespaces), never on the Kubernetes path the project runs: left out of the asset.
LOCAL_BACKEND_ONLY = frozenset({"local.stack"})


def _module_file(root: Path, module: str) -> Path | None:
    """The project file that defines `module`, if the project defines it."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(tree: ast.Module, package: str) -> set[str]:
    """Every module an import statement names (in functions too: they run when called),
    with `from x import y` counting x.y as well when y is a module. Imports under
    `if TYPE_CHECKING:` are left out: they never run."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def drill_sources(root: Path = ROOT) -> list[str]:
    """The files the drill's CodeBuild project needs, relative to `root`: every project
    module `python -m local.drill` imports, followed through their imports, with the
    packages that hold them and the drill's requirements. Read from the code, so a new
    import travels with the drill instead of failing in CodeBuild."""
    files: set[Path] = {root / DRILL_REQUIREMENTS}
    pending = [DRILL_MODULE]
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen or module in LOCAL_BACKEND_ONLY:
            continue
        seen.add(module)
        path = _module_file(root, module)
        if path is None:
            continue  # the standard library or an installed package
        files.add(path)
        parts = module.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # its packages run first
        package = module if path.stem == "__init__" else ".".join(parts[:-1])  # a package imports from itself
        pending.extend(_imported_modules(ast.parse(path.read_text()), package))
    return sorted(path.relative_to(root).as_posix() for path in files)


def ha_drill_project_name(cluster_name: str) -> str:
    return f"{cluster_name}-ha-drill"


class HaDrillProject(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_name: str,
        namespace: str,
        rayservice_name: str,
        serve_url: str,
        vpc: ec2.IVpc,
        subnets: list[ec2.ISubnet],
        security_group: ec2.ISecurityGroup,
        api_keys: secretsmanager.ISecret | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        # Only what the drill runs travels (drill_sources): everything else is excluded,
        # dot files too ("*" does not match them: .git would travel).
        sources = drill_sources()
        folders = sorted({parent.as_posix() for source in sources for parent in Path(source).parents} - {"."})
        source = s3_assets.Asset(
            self,
            "Source",
            path=str(ROOT),
            exclude=["*", ".*", *(f"!{path}" for path in [*folders, *sources])],
        )
        key = kms.Key(self, "Key", description="HA drill build artifacts and logs", enable_key_rotation=True)
        self.project = codebuild.Project(
            self,
            "Project",
            project_name=ha_drill_project_name(cluster_name),
            description="Ray Serve HA drill: delete the head pod under load, fail on any failed request",
            source=codebuild.Source.s3(bucket=source.bucket, path=source.s3_object_key),
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0, compute_type=codebuild.ComputeType.SMALL
            ),
            vpc=vpc,
            subnet_selection=ec2.SubnetSelection(subnets=subnets),
            security_groups=[security_group],
            encryption_key=key,
            timeout=cdk.Duration.minutes(30),
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(
                    log_group=logs.LogGroup(
                        self, "Logs", retention=logs.RetentionDays.THREE_MONTHS,
                        removal_policy=cdk.RemovalPolicy.DESTROY,
                    )
                )
            ),
            environment_variables={
                "CLUSTER_NAME": codebuild.BuildEnvironmentVariable(value=cluster_name),
                "NAMESPACE": codebuild.BuildEnvironmentVariable(value=namespace),
                "RAYSERVICE": codebuild.BuildEnvironmentVariable(value=rayservice_name),
                "SERVE_URL": codebuild.BuildEnvironmentVariable(value=serve_url),
                # The drill's own entry of the API keys (CodeBuild reads it; CDK grants the read).
                **({"OPENAI_API_KEY": codebuild.BuildEnvironmentVariable(
                    type=codebuild.BuildEnvironmentVariableType.SECRETS_MANAGER,
                    value=f"{api_keys.secret_arn}:{HA_DRILL}",
                )} if api_keys is not None else {}),
            },
            build_spec=codebuild.BuildSpec.from_object({
                "version": "0.2",
                "phases": {
                    "install": {
                        "runtime-versions": {"python": "3.12"},
                        "commands": ["pip install --quiet -r local/drill/requirements.txt"],
                    },
                    "build": {
                        "commands": [
                            'aws eks update-kubeconfig --name "$CLUSTER_NAME" --region "$AWS_REGION"',
                            'python -m local.drill --backend kubernetes --url "$SERVE_URL" '
                            '--load-balancer "$SERVE_URL" --namespace "$NAMESPACE" --rayservice "$RAYSERVICE" '
                            '--out drill-results --max-failed 0',
                        ]
                    },
                },
                "artifacts": {"files": ["drill-results/**/*"]},
            }),
        )
        source.grant_read(self.project)
        self.project.add_to_role_policy(
            iam.PolicyStatement(actions=["eks:DescribeCluster"], resources=[cluster.cluster_arn])
        )
        # A Project made without `role=` creates its own; only imported projects have none.
        assert self.project.role is not None
        # Kubernetes access: a group bound to a Role that may read the RayService and list or
        # delete pods in the serving namespace, nothing else (ray_serve_ha/charts/rbac.py).
        self.access = eks.CfnAccessEntry(
            self,
            "Access",
            cluster_name=cluster.cluster_name,
            principal_arn=self.project.role.role_arn,
            type="STANDARD",
            kubernetes_groups=[HA_DRILL_GROUP],
        )
        self.rbac = eks.KubernetesManifest(self, "Rbac", cluster=cluster, manifest=ha_drill_rbac(namespace))
