"""DirectorySource on a real directory with the kubelet's layout and atomic swap
(write_configmap_volume performs the kubelet's steps; there is no kubelet here)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agent_registry.runtime.bundle import BehaviorBundle
from agent_registry.runtime.directory_source import DirectorySource
from agent_registry.runtime.kubelet_volume import write_configmap_volume
from runtime.bundles import Script, bundle_files, identifying
from runtime.waiting import Collector, wait_until_sync


def payload(version: int) -> dict[str, str]:
    script = f"-- version {version}\nfunction on_task(task, ctx) return {version} end\n"
    meta = {"name": "b", "namespace": "ns", "revision": version}
    return {"behavior.lua": script, "behavior.json": json.dumps(meta)}


@pytest.fixture(params=["inotify", "poll"])
def use_inotify(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "inotify")


def test_start_delivers_the_current_version_then_each_swap(
    tmp_path: Path, use_inotify: bool
) -> None:
    write_configmap_volume(tmp_path, payload(1))
    source = DirectorySource(tmp_path, poll_interval=0.05, use_inotify=use_inotify)
    seen = Collector()
    source.start(seen)
    try:
        assert seen.revisions == [1]  # before start() returned
        for version in (2, 3, 4):
            write_configmap_volume(tmp_path, payload(version))
            wait_until_sync(lambda v=version: seen.revisions[-1] == v)  # type: ignore[misc]
    finally:
        source.stop()
    assert seen.revisions == [1, 2, 3, 4]
    assert seen.bundles[-1].script == payload(4)["behavior.lua"]
    if use_inotify:
        assert source.mode == "inotify+poll"


def test_script_and_metadata_always_come_from_the_same_version(tmp_path: Path) -> None:
    write_configmap_volume(tmp_path, payload(1))
    source = DirectorySource(tmp_path)
    stop = threading.Event()

    def swapper() -> None:
        version = 1
        while not stop.is_set():
            version += 1
            write_configmap_volume(tmp_path, payload(version))

    thread = threading.Thread(target=swapper)
    thread.start()
    reads = 0
    try:
        for _ in range(2000):
            result = source.read()
            if result is None:
                continue  # lost every race in a row: allowed, the next check retries
            _, bundle = result
            assert bundle.script.startswith(f"-- version {bundle.revision}\n")
            reads += 1
    finally:
        stop.set()
        thread.join()
    assert reads >= 100  # most reads win; the point is that none is inconsistent


def test_a_directory_that_appears_later_is_picked_up(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    source = DirectorySource(volume, poll_interval=0.05)
    seen = Collector()
    source.start(seen)
    try:
        assert seen.revisions == []
        write_configmap_volume(volume, payload(7))
        wait_until_sync(lambda: seen.revisions == [7])
    finally:
        source.stop()


def test_plain_directory_edited_in_place(tmp_path: Path) -> None:
    (tmp_path / "behavior.lua").write_text("-- one\nfunction on_task() end\n")
    source = DirectorySource(tmp_path, poll_interval=0.05)
    seen = Collector()
    source.start(seen)
    try:
        (tmp_path / "behavior.lua").write_text("-- two, longer\nfunction on_task() end\n")
        wait_until_sync(lambda: seen.bundles[-1].script.startswith("-- two"))
    finally:
        source.stop()
    assert seen.bundles[0].script.startswith("-- one")


def test_a_failing_callback_does_not_end_the_watch(tmp_path: Path) -> None:
    write_configmap_volume(tmp_path, payload(1))
    calls: list[int | None] = []

    def flaky(bundle: BehaviorBundle) -> None:
        calls.append(bundle.revision)
        if bundle.revision == 2:
            raise RuntimeError("callback bug")

    source = DirectorySource(tmp_path, poll_interval=0.05)
    source.start(flaky)
    try:
        write_configmap_volume(tmp_path, payload(2))
        wait_until_sync(lambda: calls[-1] == 2)
        write_configmap_volume(tmp_path, payload(3))
        wait_until_sync(lambda: calls[-1] == 3)
    finally:
        source.stop()


def test_unchanged_content_is_not_delivered_again(tmp_path: Path) -> None:
    write_configmap_volume(tmp_path, payload(1))
    source = DirectorySource(tmp_path, poll_interval=0.02)
    seen = Collector()
    source.start(seen)
    try:
        assert not source.check()
        write_configmap_volume(tmp_path, payload(1))  # same payload: the kubelet writes nothing
        assert not source.check()
    finally:
        source.stop()
    assert seen.revisions == [1]


def test_every_script_of_a_multi_script_bundle_is_read(tmp_path: Path) -> None:
    stable = Script(identifying("stable"), weight=0.9, name="b", revision=1)
    canary = Script(identifying("canary"), weight=0.1, name="b", revision=2)
    write_configmap_volume(tmp_path, bundle_files(stable, canary))
    source = DirectorySource(tmp_path, poll_interval=0.05)
    seen = Collector()
    source.start(seen)
    try:
        newer = Script(identifying("canary-3"), weight=0.1, name="b", revision=3)
        write_configmap_volume(tmp_path, bundle_files(stable, newer))
        wait_until_sync(lambda: len(seen.bundles) == 2)
    finally:
        source.stop()
    first, second = seen.bundles
    assert first.meta_error is None
    assert [e.sha256 for e in first.entries] == [stable.sha256, canary.sha256]
    assert [e.sha256 for e in second.entries] == [stable.sha256, newer.sha256]


def test_a_plain_directory_notices_an_edit_of_another_script(tmp_path: Path) -> None:
    stable = Script(identifying("stable"), weight=0.5, name="b")
    canary = Script(identifying("canary"), weight=0.5, name="c")
    for key, content in bundle_files(stable, canary).items():
        (tmp_path / key).write_text(content)
    source = DirectorySource(tmp_path, poll_interval=0.05)
    seen = Collector()
    source.start(seen)
    try:
        # Only behavior-1.lua changes: its declared sha256 no longer matches, which must be
        # seen (and refused) rather than missed.
        (tmp_path / "behavior-1.lua").write_text(identifying("edited, and longer"))
        wait_until_sync(lambda: len(seen.bundles) == 2)
    finally:
        source.stop()
    assert seen.bundles[0].meta_error is None
    assert seen.bundles[1].meta_error is not None
    assert "behavior-1.lua's content" in seen.bundles[1].meta_error
