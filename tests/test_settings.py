"""Settings: one default per key (the model), parsing of `-c` strings, one clear message per
bad value or rule across values, and docs/settings.md's table equal to the model."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import aws_cdk as cdk
import pytest

from app import main
from ray_serve_ha.charts.accelerators import ACCELERATORS, NEURON, NVIDIA
from ray_serve_ha.charts.job_args import JOB_ARGUMENTS
from ray_serve_ha.charts.models import DEFAULT_MODEL
from ray_serve_ha.constructs.gcs_store_engine import ELASTICACHE_NODE_TYPES
from ray_serve_ha.constructs.readiness import READINESS_TIMEOUT_MAX_MINUTES
from stacks.settings import (
    SETTING_KEYS,
    Settings,
    SettingsError,
    settings_table,
)
from tests.bad_settings import ACCELERATOR_NAMES, BAD_INPUTS, CLUSTER_NAME_RULE, CPU_SIZES, team
from tests.conftest import CDK_JSON_CONTEXT, ROOT, context


def settings(**overrides) -> Settings:
    return Settings.from_context(context(**overrides))


def problems(**overrides) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        settings(**overrides)
    return raised.value.problems


def test_defaults_come_from_the_model_and_cdk_json_holds_only_feature_flags():
    # A key in cdk.json would be a second default; it holds only what a user changes.
    assert [key for key in CDK_JSON_CONTEXT if key in SETTING_KEYS] == []
    s = settings()
    assert s.cluster.name == "ray-serve-ha"
    assert s.cluster.kubernetes_version == "1.35"
    assert s.cluster.endpoint_public_access_cidrs == ()
    assert s.capacity.accelerator is NEURON
    assert s.capacity.mode == "auto-mode"
    assert s.capacity.instance_types == ("inf2.8xlarge",)
    assert (s.capacity.min_nodes, s.capacity.max_nodes) == (2, 4)
    assert (s.gcs_store.engine, s.gcs_store.engine_version, s.gcs_store.node_type) == (
        "redis",
        "7.1",
        "cache.r7g.large",
    )
    assert s.operations.readiness_timeout_minutes == READINESS_TIMEOUT_MAX_MINUTES == 55
    assert s.environment.account is None and s.environment.region is None
    assert s.pipeline.enabled is False and s.batch_teams == ()


def test_the_settings_page_table_is_the_models():
    # Keys, defaults and allowed values: `python -m stacks.settings` prints the table.
    page = (ROOT / "docs" / "settings.md").read_text()
    table = "\n".join(line for line in page.splitlines() if line.startswith("| `") or line.startswith("| key")
                      or line == "|---|---|---|")
    assert table == settings_table()
    assert [re.match(r"\| `(\w+)`", row).group(1) for row in settings_table().splitlines()[2:]] == list(SETTING_KEYS)


def test_null_means_the_default():
    s = settings(acceleratorInstanceTypes=None, clusterName=None)
    assert s.capacity.instance_types == ("inf2.8xlarge",) and s.cluster.name == "ray-serve-ha"


def test_cli_strings_are_parsed_like_json_values():
    # `cdk synth -c key=value` passes every value as a string.
    s = settings(
        acceleratorMinNodes="3",
        acceleratorMaxNodes=" 6 ",
        adminPrincipalArns='["arn:aws:iam::123456789012:role/Admin"]',
        endpointPublicAccessCidrs="203.0.113.0/24, 198.51.100.7/32",
        acceleratorInstanceTypes="inf2.8xlarge,inf2.24xlarge",
        availabilitySloPercent="99.5",
        readinessTimeoutMinutes="30",
        pipeline="False",
        batchTeams='[{"name": "analytics", "namespace": "team-analytics", "cpus": 4, "memoryGib": 16}]',
    )
    assert (s.capacity.min_nodes, s.capacity.max_nodes) == (3, 6)
    assert s.cluster.admin_principal_arns == ("arn:aws:iam::123456789012:role/Admin",)
    assert s.cluster.endpoint_public_access_cidrs == ("203.0.113.0/24", "198.51.100.7/32")
    assert s.capacity.instance_types == ("inf2.8xlarge", "inf2.24xlarge")
    assert s.operations.availability_slo_percent == 99.5 and s.operations.readiness_timeout_minutes == 30
    assert s.pipeline.enabled is False
    (team,) = s.batch_teams
    assert (team.name, team.cpus, team.memory_gib, team.max_workers) == ("analytics", 4, 16, 2)


def test_accelerator_picks_its_default_instance_type():
    s = settings(accelerator="nvidia")
    assert s.capacity.accelerator is NVIDIA
    assert s.capacity.instance_types == ("g6e.xlarge",)


def test_valkey_gets_a_valkey_version_by_default():
    assert settings(gcsStoreEngine="valkey").gcs_store.engine_version == "8.0"


def test_account_and_region_make_the_stacks_environment_aware():
    s = settings(account="123456789012", region="us-east-2")
    assert (s.environment.account, s.environment.region) == ("123456789012", "us-east-2")


def test_the_smallest_inferentia_is_refused_for_its_host_memory():
    assert "16 GiB" in NEURON.unfit_reason("inf2.xlarge", DEFAULT_MODEL)


def test_every_instance_type_but_the_smallest_inferentia_can_serve_the_model():
    reasons = {t: a.unfit_reason(t, DEFAULT_MODEL) for a in ACCELERATORS.values() for t in a.instance_types}
    unfit = {t: reason for t, reason in reasons.items() if reason}
    assert list(unfit) == ["inf2.xlarge"]
    for accelerator in ACCELERATORS.values():
        s = settings(accelerator=accelerator.name, acceleratorInstanceTypes=[
            t for t in accelerator.instance_types if t not in unfit
        ])
        assert set(s.capacity.instance_types) == set(accelerator.instance_types) - set(unfit)


def test_every_listed_elasticache_node_type_is_accepted():
    for family, sizes in ELASTICACHE_NODE_TYPES.items():
        for size in sizes:
            assert settings(gcsStoreNodeType=f"cache.{family}.{size}").gcs_store.node_type == f"cache.{family}.{size}"


def test_elasticache_node_types_match_their_source():
    # The table's source: the ElastiCache API Reference's CacheNode text, which botocore
    # ships. Current generation, less T2 (no new T2 clusters, per the user guide).
    botocore_session = pytest.importorskip("botocore.session")
    model = botocore_session.get_session().get_service_model("elasticache")
    text = re.sub(r"<[^>]+>", " ", model.shape_for("CacheNode").documentation)
    current = [part.split("Previous generation")[0] for part in text.split("Current generation")[1:]]
    listed: dict[str, list[str]] = {}
    for node_type in re.findall(r"cache\.([a-z0-9]+)\.([a-z0-9]+)", " ".join(current)):
        listed.setdefault(node_type[0], []).append(node_type[1])
    del listed["t2"]
    assert {f: tuple(s) for f, s in listed.items()} == ELASTICACHE_NODE_TYPES


@pytest.mark.parametrize("overrides,expected", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_value_is_refused_with_one_message_and_nothing_synthesized(tmp_path, capsys, overrides, expected):
    # What app.py does with the settings `cdk synth` passes it: one message, exit 1, no stack.
    assert main(cdk.App(context=context(**overrides), outdir=str(tmp_path))) == 1
    assert capsys.readouterr().err == (
        "error: Invalid settings (1 problem). Fix them in cdk.json or with -c key=value:\n"
        f"  - {expected}\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_every_problem_is_reported_in_one_message():
    with pytest.raises(SettingsError) as raised:
        settings(accelerator="tpu", acceleratorMinNodes=9, clusterName="X", gcsStoreEngineVersion="6.2",
                 batchTeams=team(cpus=2.5))
    assert str(raised.value) == (
        "Invalid settings (5 problems). Fix them in cdk.json or with -c key=value:\n"
        f"  - clusterName='X': {CLUSTER_NAME_RULE}\n"
        f"  - accelerator='tpu': must be one of: {ACCELERATOR_NAMES}\n"
        "  - batchTeams[0].cpus=2.5: must be a whole number from 1 to 192\n"
        "  - acceleratorMinNodes=9: must not exceed acceleratorMaxNodes (4)\n"
        "  - gcsStoreEngineVersion='6.2': the GCS store requires TLS (transit encryption mode 'required'), "
        "which needs redis 7.0 or later; use one of 7.0, 7.1"
    )


def test_a_rule_across_values_is_not_reported_for_a_value_already_refused():
    # A bad accelerator says so once; its instance types are not then judged against a guess.
    assert problems(accelerator="tpu", acceleratorInstanceTypes="g6e.xlarge") == [
        f"accelerator='tpu': must be one of: {ACCELERATOR_NAMES}"
    ]


def test_team_name_limit_follows_the_longest_job(monkeypatch):
    longest = max(len(job) for job in JOB_ARGUMENTS)
    at_limit = "a" * (47 - 1 - longest)
    assert settings(batchTeams=team(name=at_limit)).batch_teams[0].name == at_limit
    # A new job with a longer name shortens what a team name may be, with no other change.
    sweep = replace(JOB_ARGUMENTS["xgboost"], job="hyperparameter-sweep")
    monkeypatch.setitem(JOB_ARGUMENTS, sweep.job, sweep)
    assert problems(batchTeams=team(name=at_limit)) == [
        f"batchTeams[0]: name='{at_limit}' is {len(at_limit)} characters; at most 26: the team's RayJob "
        f"'{at_limit}-hyperparameter-sweep' must stay within KubeRay's 47 characters"
    ]


def test_a_team_that_fits_a_node_group_is_accepted():
    s = settings(capacityMode="node-groups", batchTeams=team(cpus=63, memoryGib=219))
    assert (s.batch_teams[0].cpus, s.batch_teams[0].memory_gib) == (63, 219)


def test_feature_flags_and_cli_keys_are_not_mistaken_for_settings():
    s = settings(**{"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:enable-path-metadata": True})
    assert s.cluster.name == "ray-serve-ha"


def test_teams_that_pass_on_their_own_are_still_judged_against_the_capacity():
    assert problems(capacityMode="node-groups", batchTeams=json.dumps([
        {"name": "a", "namespace": "team-a", "cpus": 64, "memoryGib": 300},
        {"name": "b", "namespace": "team-b", "cpus": True, "memoryGib": 8},
    ])) == [
        "batchTeams[1].cpus=true: must be a whole number from 1 to 192",
        "batchTeams[0]: cpus=64, memoryGib=300: no node-group instance type holds this worker once the "
        f"node's own reservations are taken (capacityMode=node-groups); sizes: {CPU_SIZES}",
    ]


@pytest.mark.parametrize(("teams", "min_nodes", "max_nodes"), [(0, 2, 3), (1, 2, 4), (3, 4, 6)])
def test_the_system_node_group_holds_every_head_and_an_upgrades_second(teams, min_nodes, max_nodes):
    # One head (2.5 CPUs, 8.5 GiB with its autoscaler sidecar) per m7i.xlarge, whose pods may
    # request 3.17 CPUs and 12.3 GiB by Karpenter's estimate: the serving head and each team's
    # in steady state (two nodes at least, the small pods beside the heads), and a NewCluster
    # upgrade's second serving head on a node of its own: the scheduler spreads the small pods
    # (UI, operator, CoreDNS), which may leave no node with room for a head, so they get theirs.
    found = settings(capacityMode="node-groups", batchTeams=[
        {"name": f"t{i}", "namespace": f"team-{i}", "cpus": 1, "memoryGib": 1} for i in range(teams)
    ]).capacity.system_nodes
    assert (found.instance_type, found.min_nodes, found.max_nodes) == ("m7i.xlarge", min_nodes, max_nodes)


def test_a_head_fits_a_system_node_by_the_schedulers_estimate_and_two_do_not():
    from ray_serve_ha.charts.capacity_plan import serving_head, team_head
    from ray_serve_ha.charts.node_sizing import CPU_INSTANCE_TYPES

    node = CPU_INSTANCE_TYPES["m7i.xlarge"]
    head = serving_head(autoscaling=True)
    assert (head.cpu_milli, head.memory_mib) == (2500, 8704)
    assert (team_head("a").cpu_milli, team_head("a").memory_mib) == (2500, 8704)
    assert head.cpu_milli <= node.pods_cpu_milli < 2 * head.cpu_milli
    assert head.memory_mib <= node.pods_memory_mib < 2 * head.memory_mib


def test_vpc_endpoints_default_to_s3_for_a_new_vpc_and_none_for_an_existing_one():
    from tests.conftest import existing_vpc

    assert settings().network.endpoints == "s3"
    assert settings(**existing_vpc()).network.endpoints == "none"
    assert settings(**existing_vpc(vpcEndpoints="s3+ecr")).network.endpoints == "s3+ecr"


def test_settings_read_no_kubernetes_library():
    # Teams are checked with the library's pure rules (batch_teams.py), not by building charts.
    import subprocess
    import sys

    code = "import sys, stacks.settings; sys.exit(any(m in sys.modules for m in ('cdk8s', 'cdk8s_plus_28')))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


def test_settings_defaults_are_the_librarys():
    from ray_serve_ha.charts.capacity import DEFAULT_CAPACITY_MODE, DEFAULT_MAX_NODES, DEFAULT_MIN_NODES
    from ray_serve_ha.charts.profiles import EksDeployment
    from ray_serve_ha.constructs.availability import DEFAULT_SLO_PERCENT
    from ray_serve_ha.constructs.gcs_store_engine import GcsStoreEngine
    from ray_serve_ha.constructs.readiness import DEFAULT_READINESS_TIMEOUT_MINUTES

    s = settings()
    assert (s.capacity.mode, s.capacity.min_nodes, s.capacity.max_nodes) == (
        DEFAULT_CAPACITY_MODE, DEFAULT_MIN_NODES, DEFAULT_MAX_NODES
    ) == (EksDeployment.capacity_mode, EksDeployment.min_workers, EksDeployment.max_workers)
    assert s.gcs_store == GcsStoreEngine()
    assert s.operations.readiness_timeout_minutes == DEFAULT_READINESS_TIMEOUT_MINUTES
    assert s.operations.availability_slo_percent == DEFAULT_SLO_PERCENT
    assert (s.serving.model, s.secrets.hugging_face_token_secret_name) == (
        EksDeployment.model, EksDeployment.hugging_face_token_secret
    )
