"""The kubelet's ConfigMap volume layout, as write_configmap_volume produces it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent_registry.runtime.kubelet_volume import DATA_DIR, write_configmap_volume


def test_layout_matches_the_kubelets(tmp_path: Path) -> None:
    ts = write_configmap_volume(tmp_path, {"behavior.lua": "-- v1", "behavior.json": "{}"})
    assert ts.startswith("..")
    assert ts != DATA_DIR
    assert os.readlink(tmp_path / DATA_DIR) == ts  # relative link to the timestamped dir
    for key in ("behavior.lua", "behavior.json"):
        assert os.readlink(tmp_path / key) == f"{DATA_DIR}/{key}"  # through ..data
        assert (tmp_path / ts / key).is_file()
        assert not (tmp_path / ts / key).is_symlink()
    assert (tmp_path / "behavior.lua").read_text() == "-- v1"
    assert sorted(os.listdir(tmp_path)) == sorted([DATA_DIR, ts, "behavior.lua", "behavior.json"])


def test_swap_replaces_the_data_link_and_removes_the_old_version(tmp_path: Path) -> None:
    first = write_configmap_volume(tmp_path, {"behavior.lua": "-- v1", "old.txt": "x"})
    second = write_configmap_volume(tmp_path, {"behavior.lua": "-- v2"})
    assert second != first
    assert os.readlink(tmp_path / DATA_DIR) == second
    assert not (tmp_path / first).exists()
    assert not (tmp_path / "old.txt").is_symlink()  # keys gone from the payload are removed
    assert (tmp_path / "behavior.lua").read_text() == "-- v2"
    assert not (tmp_path / "..data_tmp").exists()


def test_unchanged_payload_writes_nothing(tmp_path: Path) -> None:
    first = write_configmap_volume(tmp_path, {"behavior.lua": "-- same"})
    assert write_configmap_volume(tmp_path, {"behavior.lua": "-- same"}) == first


@pytest.mark.parametrize("key", ["", "a/b", "..data", "..x"])
def test_refuses_keys_the_kubelet_refuses(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid ConfigMap key"):
        write_configmap_volume(tmp_path, {key: "x"})
