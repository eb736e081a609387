"""Snapshots of every stack's template. They complement the targeted tests: a change shows
up in review as a template diff (update with `pytest --snapshot-update`)."""

from __future__ import annotations

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from tests.conftest import normalise_asset_hashes


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stack", ["network", "cluster", "gcs_store", "serving"])
def test_default_system(default_system, snapshot_json, stack):
    assert normalise_asset_hashes(getattr(default_system, stack).to_json()) == snapshot_json


def test_cluster_with_nvidia_node_groups(node_groups_nvidia, snapshot_json):
    assert normalise_asset_hashes(node_groups_nvidia.cluster.to_json()) == snapshot_json


@pytest.mark.parametrize("stack", ["cluster", "serving"])
def test_spot_replicas_on_node_groups(mixed_node_groups_nvidia, snapshot_json, stack):
    assert normalise_asset_hashes(getattr(mixed_node_groups_nvidia, stack).to_json()) == snapshot_json


def test_spot_replicas_on_auto_mode(mixed_auto_mode, snapshot_json):
    assert normalise_asset_hashes(mixed_auto_mode.cluster.to_json()) == snapshot_json


def test_asset_hashes_are_numbered_in_order_of_appearance():
    a, b = "a" * 64, "b" * 64
    assert normalise_asset_hashes({"x": [a, b, a]}) == {"x": ["<asset-1>", "<asset-2>", "<asset-1>"]}
