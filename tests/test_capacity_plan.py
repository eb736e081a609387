"""What each node keeps and holds: the image table, the disks computed from it, the system
node group packed from its pods' requests, a replica's start on paper, and the docs' tables
equal to the code that computes them."""

from __future__ import annotations

import pytest

from ray_serve_ha.charts.accelerators import ACCELERATORS, NEURON, NVIDIA
from ray_serve_ha.charts.capacity_plan import (
    AUTO_MODE_DEFAULT_DISK_GIB,
    accelerator_node_disk,
    disks_table,
    images_table,
    system_node_disk,
    team_node_disk,
)
from ray_serve_ha.charts.images import ALL_IMAGES, BATCH_CUDA, BATCH_IMAGES, SERVING_IMAGES
from ray_serve_ha.charts.node_sizing import CPU_INSTANCE_TYPES, PodRequest, nodes_to_hold
from ray_serve_ha.charts.replica_start import budget_table, nat_table, nat_traffic_gb
from tests.conftest import ROOT
from tests.crd_schemas import crd_schema

DOCS = "\n".join(page.read_text() for page in sorted((ROOT / "docs").glob("*.md")))


def test_every_dockerfile_of_the_project_is_in_the_image_table_with_its_base():
    dockerfiles = sorted(p.relative_to(ROOT).as_posix() for folder in ("images", "batch")
                         for p in (ROOT / folder).rglob("Dockerfile*"))
    assert sorted(image.dockerfile for image in ALL_IMAGES) == dockerfiles
    for image in ALL_IMAGES:
        assert image.unpacked_gb > image.pulled_gb > 0
        assert image.basis.startswith(("estimate: ", "measured: "))
        assert image.base in (ROOT / image.dockerfile).read_text()
    # Every accelerator's serving and batch image has its size.
    for accelerator in ACCELERATORS.values():
        assert accelerator.dockerfile in SERVING_IMAGES and accelerator.batch_dockerfile in BATCH_IMAGES


def test_readme_tables_are_the_codes():
    for table in (images_table(), disks_table(), budget_table(NEURON), nat_table()):
        assert table in DOCS


def test_a_serving_node_keeps_its_image_the_weights_and_compile_scratch():
    disk = accelerator_node_disk(NEURON)
    # 31 + 14.5 + 16 + 1.5 (DaemonSets) + 10 (OS, logs) GB, x 1.25 / 0.85 = 100.0 GiB.
    assert disk.used_gb == 73.0
    assert disk.min_gib == 100
    # EKS's default node group disk (20 GiB) and Auto Mode's default NodeClass (80 GiB) are too small.
    assert disk.min_gib > AUTO_MODE_DEFAULT_DISK_GIB


def test_the_heads_nodes_keep_every_heads_image_once_and_the_serving_one_twice():
    disk = system_node_disk(NEURON, [BATCH_CUDA, BATCH_CUDA])
    names = [image.name for image in disk.images]
    assert names.count("batch (cuda)") == 1 and names.count("ray-serve (neuron)") == 1
    assert ("an upgrade's new ray-serve (neuron) image", 31.0) in disk.data


def test_team_nodes_fit_auto_modes_default_node_class():
    for image in BATCH_IMAGES.values():
        assert team_node_disk("t", image).min_gib <= AUTO_MODE_DEFAULT_DISK_GIB


def test_the_auto_mode_default_disk_is_the_node_class_schemas():
    schema = crd_schema("eks.amazonaws.com/v1", "NodeClass")
    assert schema["properties"]["spec"]["properties"]["ephemeralStorage"]["default"]["size"] == (
        f"{AUTO_MODE_DEFAULT_DISK_GIB}Gi"
    )


def test_packing_puts_small_pods_beside_a_head_and_refuses_a_pod_no_node_holds():
    node = CPU_INSTANCE_TYPES["m7i.xlarge"]
    head = PodRequest("head", 2500, 8704)
    small = PodRequest("small", 250, 512)
    assert nodes_to_hold(node, [head, small, small]) == 1
    assert nodes_to_hold(node, [head, head, small]) == 2
    with pytest.raises(ValueError, match=r"^huge .* does not fit a node that offers its pods 3170m"):
        nodes_to_hold(node, [PodRequest("huge", 4000, 1024)])


def test_an_s3_gateway_endpoint_takes_the_image_layers_and_artifacts_off_the_nat_path():
    # Neuron: 10.5 GB of layers + 1 GB of compiled artifacts + 14.5 GB of weights; the weights
    # come from the Hugging Face Hub (the internet) either way.
    assert nat_traffic_gb(NEURON, s3_endpoint=False) == 26.0
    assert nat_traffic_gb(NEURON, s3_endpoint=True) == 14.5
    assert nat_traffic_gb(NVIDIA, s3_endpoint=False) == 22.5
