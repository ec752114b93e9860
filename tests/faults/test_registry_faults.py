"""Fault injection on the registry: `tandem push` and `tandem alias` killed with SIGKILL mid-way
(while writing an object, inside the transaction, waiting for the write lock), and a disk that
fills up under a push. After each: no partial version, no partial object, the alias old or new,
a server following it, and the same command run again succeeds (tests/faults/registry_faults.py)."""

from __future__ import annotations

import pytest

from tandem.testing.bundles import make_bundle
from tests.faults import registry_faults
from tests.faults.harness import with_padding

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """faces v1 and v2 (tiny), and v1 padded with 48 MiB of unused weights (a push that takes a while)."""
    root = tmp_path_factory.mktemp("fault-bundles")
    v1 = make_bundle(root / "v1", None, seed=1)
    return v1, make_bundle(root / "v2", None, seed=2), with_padding(v1, root / "big", 48, seed=3)


@pytest.mark.parametrize("at", registry_faults.PUSH_POINTS)
def test_a_killed_push_leaves_no_partial_version_and_the_next_push_works(tmp_path, bundles, at):
    assert registry_faults.push_killed(tmp_path, bundles[2], "faces", at) == []


@pytest.mark.parametrize("at", registry_faults.ALIAS_POINTS)
def test_a_killed_alias_move_leaves_the_old_or_new_version_served(tmp_path, bundles, at):
    with registry_faults.serving_two_versions(tmp_path, list(bundles[:2])) as (url, key):
        assert registry_faults.alias_killed(tmp_path, bundles, "faces", at, url, key) == []


def test_a_full_disk_fails_the_push_clearly_and_keeps_nothing_of_it(tmp_path, bundles):
    problems = registry_faults.push_disk_full(tmp_path, bundles[2], bundles[0], "faces")
    if problems is None:
        pytest.skip("cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN)")
    assert problems == []
