"""Both artifact stores against one contract: a folder (LocalStore) and a bucket on a real S3-compatible
server (S3Store, through obstore over HTTP to moto's server process): content addressing, idempotent
writes, multipart uploads, integrity on write and on read, ranged streams, listing for gc, and what a
missing bucket or an unreachable service says."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import httpx
import pytest

from tandem.errors import BundleError, ConfigError, RegistryError, Unavailable
from tandem.registry.artifacts import LocalStore, open_store
from tandem.registry.registry import Registry
from tandem.registry.s3 import S3Store
from tandem.settings import Settings
from tandem.testing.processes import free_port
from tandem.testing.s3 import s3_server
from tests.integration.registry_backends import LOCAL_ARTIFACTS, damage, make_bundle

pytestmark = pytest.mark.integration

PART = 5 << 20  # the smallest part S3 takes: a multipart upload in a test stays small


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(Settings(home=tmp_path / "home", **LOCAL_ARTIFACTS).registry)
    s3 = request.getfixturevalue("s3")
    opened = open_store(Settings(home=tmp_path / "home", **s3.settings(s3.new_bucket())).registry)
    assert isinstance(opened, S3Store)
    return opened


def _multipart_uploads(s3, store: S3Store) -> str:
    """The bucket's incomplete multipart uploads, as the service lists them (XML)."""
    return httpx.get(f"{s3.endpoint}/{store.bucket}?uploads", timeout=10).text


def test_objects_are_named_by_their_sha256_stored_once_and_read_back_checked(store, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"weights" * 1000)
    started = time.time()
    digest = store.put_file(src)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    manifest = store.put_bytes(b'{"manifest": true}\n')
    assert store.read(digest) == src.read_bytes() and store.path(digest).read_bytes() == src.read_bytes()
    with store.open(manifest) as f:
        assert f.read() == b'{"manifest": true}\n'
    assert store.exists(digest) and store.size(digest) == 7000 and store.verify(digest)
    before = store.stat(digest)
    assert store.put_file(src, expected_sha256=digest) == digest and store.put_bytes(src.read_bytes()) == digest
    assert store.stat(digest) == before  # not written again
    listed = {o.sha256: o for o in store.objects()}
    assert set(listed) == {digest, manifest} and listed[digest].size == 7000
    assert started - 2 <= listed[digest].modified <= time.time() + 2  # gc's grace period counts from here

    async def ranged(start: int, length: int) -> bytes:
        return b"".join([c async for c in store.stream(digest, start, length)])

    assert asyncio.run(ranged(7, 14)) == (b"weights" * 1000)[7:21]
    assert asyncio.run(ranged(0, 7000)) == src.read_bytes()
    assert store.remove(manifest) == len(b'{"manifest": true}\n') and store.remove(manifest) is None
    assert not store.exists(manifest) and [o.sha256 for o in store.objects()] == [digest]
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert store.stat(missing) is None and not store.verify(missing)
    for read in (store.read, store.path, store.size):
        with pytest.raises(RegistryError, match=f"object {missing} is missing from the artifact store"):
            read(missing)
    for bad in ("../../etc/passwd", "ABC", digest.upper()):
        with pytest.raises(RegistryError, match="is not a sha256"):
            store.exists(bad)


def test_a_file_that_is_not_what_it_claims_is_refused_and_nothing_appears(store, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"the real bytes")
    claimed = hashlib.sha256(b"what the manifest says").hexdigest()
    with pytest.raises(BundleError, match=r"model.onnx has sha256 .* expected .*changed while it was being stored"):
        store.put_file(src, expected_sha256=claimed)
    assert not store.exists(claimed) and list(store.objects()) == []


def test_a_damaged_object_is_refused_on_read_and_repaired_by_storing_it_again(store, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(os.urandom(4096))
    digest = store.put_file(src)
    damage(store, digest)
    assert not store.verify(digest)
    with pytest.raises(RegistryError, match=f"object {digest} in the artifact store at .* is damaged"):
        store.read(digest)
    if isinstance(store, S3Store):  # nor is it cached for a bundle folder
        with pytest.raises(RegistryError, match="is damaged"):
            store.path(digest)
        assert not store.cache.exists(digest)
    assert store.put_file(src, expected_sha256=digest) == digest  # what the error tells the user to do: push again
    assert store.verify(digest) and store.read(digest) == src.read_bytes()


def test_a_big_file_goes_up_in_parts_and_a_file_changed_meanwhile_in_none(s3, tmp_path):
    store = S3Store(s3.settings(s3.new_bucket())["artifacts"], tmp_path / "cache", endpoint_url=s3.endpoint,
                    access_key_id="k", secret_access_key="s", part_bytes=PART)
    big = tmp_path / "big.onnx"
    big.write_bytes(os.urandom(2 * PART + 12345))
    digest = store.put_file(big)
    found = store.stat(digest)
    assert found is not None and found.size == big.stat().st_size and found.version.endswith('-3"')  # three parts
    assert store.read(digest) == big.read_bytes()
    assert store.put_file(big, expected_sha256=digest) == digest and store.stat(digest) == found  # not sent again

    # The file changes between the hash that names it and the upload: the upload is aborted, not completed.
    changing = tmp_path / "changing.onnx"
    changing.write_bytes(os.urandom(2 * PART + 1))
    named = hashlib.sha256(changing.read_bytes()).hexdigest()

    class Rewrite(S3Store):
        def _upload(self, sha256, body):
            changing.write_bytes(os.urandom(2 * PART + 1))  # same size, other bytes
            super()._upload(sha256, body)

    rewriting = Rewrite(store.location, tmp_path / "cache2", endpoint_url=s3.endpoint,
                        access_key_id="k", secret_access_key="s", part_bytes=PART)
    with pytest.raises(BundleError, match="changed while it was being stored"):
        rewriting.put_file(changing, expected_sha256=named)
    assert not store.exists(named) and "<Upload>" not in _multipart_uploads(s3, store)


def test_a_missing_bucket_and_bad_settings_say_what_to_fix(s3, tmp_path):
    store = S3Store("s3://no-such-bucket/x", tmp_path / "cache", endpoint_url=s3.endpoint, access_key_id="k",
                    secret_access_key="s")
    with pytest.raises(ConfigError, match=r"has no bucket 'no-such-bucket'.*create it"):
        store.put_bytes(b"x")
    for url in ("s3://", "s3://UPPER/x", "s3://ok-bucket/../x", "s3://a/b"):
        with pytest.raises(ConfigError, match="is not s3://BUCKET"):
            S3Store(url, tmp_path / "cache")
    with pytest.raises(ConfigError, match="set both TANDEM_S3_ACCESS_KEY_ID and TANDEM_S3_SECRET_ACCESS_KEY"):
        S3Store("s3://ok-bucket", tmp_path / "cache", access_key_id="k")
    with pytest.raises(ConfigError, match="is not an http"):
        S3Store("s3://ok-bucket", tmp_path / "cache", endpoint_url="127.0.0.1:9000", access_key_id="k",
                secret_access_key="s")
    for where in ("gs://bucket", "relative/folder"):
        with pytest.raises(ConfigError, match=r"TANDEM_ARTIFACTS=.* is neither s3://BUCKET/PREFIX"):
            open_store(Settings(home=tmp_path, **{**LOCAL_ARTIFACTS, "artifacts": where}).registry)
    folder = open_store(Settings(home=tmp_path, **{**LOCAL_ARTIFACTS, "artifacts": str(tmp_path / "shared")}).registry)
    assert isinstance(folder, LocalStore) and folder.root == tmp_path / "shared"


def test_an_outage_mid_push_leaves_no_version_and_says_so(tmp_path):
    """The S3 service stops answering after the first push: the second fails with a 503-class error, and
    the registry shows the first version only (a version appears whole or not at all)."""
    with s3_server() as own:
        settings = Settings(home=tmp_path / "home", database_url=None, **own.settings(own.new_bucket()))
        with Registry.open(settings) as reg:
            assert reg.push(make_bundle(tmp_path / "v1", seed=b"one")).version == 1
            store = S3Store(settings.artifacts, tmp_path / "home" / "cache" / "objects", endpoint_url=own.endpoint,
                            access_key_id="k", secret_access_key="s", max_retries=1)
            pusher = Registry(reg.db, store, reg.home)
            own.proc.kill()
            own.proc.wait()
            with pytest.raises(Unavailable, match=r"the artifact store s3://.* could not .*try again"):
                pusher.push(make_bundle(tmp_path / "v2", seed=b"two"))
            assert [v.version for v in reg.versions("faces")] == [1] and reg.generation() == 1


def test_an_unreachable_service_is_an_outage_not_a_crash(tmp_path):
    store = S3Store("s3://some-bucket", tmp_path / "cache", endpoint_url=f"http://127.0.0.1:{free_port()}",
                    access_key_id="k", secret_access_key="s", max_retries=0)
    for call in (lambda: store.exists("0" * 64), lambda: list(store.objects()), lambda: store.put_bytes(b"x")):
        with pytest.raises(Unavailable, match=r"could not .* check it is reachable \(TANDEM_S3_ENDPOINT_URL\)") as e:
            call()
        assert "127.0.0.1" not in str(e.value)  # the server hands this to clients: no internal address
