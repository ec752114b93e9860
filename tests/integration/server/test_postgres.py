"""The server over a PostgreSQL registry (127.0.0.1:5432, database `test`, a schema of its own)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from sqlalchemy.engine import make_url

from tandem.bundle import Bundle
from tandem.bundle.runtime import OnnxModel
from tandem.registry.registry import Registry
from tandem.testing.processes import free_port
from tests.integration.registry_backends import postgres_schema
from tests.integration.server.serving import Bearer, populate, running, test_settings

pytestmark = pytest.mark.integration


def test_serving_from_postgresql_follows_its_aliases(tmp_path, bundles, photos):
    with postgres_schema() as url:
        settings = test_settings(tmp_path / "home", database_url=url)
        keys = populate(settings, list(bundles), production=1)
        models = [OnnxModel.open(Bundle.load(b)) for b in bundles]
        pixels = models[0].pixels_from_files(photos)
        with running(settings) as server:
            client = triton.InferenceServerClient(server.host_port)
            client.register_plugin(Bearer(keys.predict))
            try:
                assert client.is_server_ready() and client.get_model_metadata("faces")["versions"] == ["1", "2"]
                with server.client(keys.predict) as http:  # what PostgreSQL cannot store never reaches it
                    r = http.get("/v2/models/fa%00ces/versions/99999999999")
                    assert r.status_code == 404 and "no model named" in r.json()["error"]
                    r = http.get("/v2/models/faces/versions/99999999999")
                    assert r.status_code == 404 and "has no version 99999999999" in r.json()["error"]

                def infer() -> tuple[str, np.ndarray]:
                    inp = triton.InferInput("pixels", list(pixels.shape), "UINT8")
                    inp.set_data_from_numpy(pixels)
                    res = client.infer("faces", [inp], outputs=[triton.InferRequestedOutput("embedding")])
                    return res.get_response()["model_version"], res.as_numpy("embedding")

                version, emb = infer()
                assert version == "1" and np.abs(emb - models[0].run(pixels)["embedding"]).max() <= 1e-5
                with Registry.open(settings) as reg:
                    reg.set_alias("faces", "production", 2)
                deadline = time.monotonic() + 30
                while (version := infer()[0]) == "1" and time.monotonic() < deadline:
                    time.sleep(0.05)
                version, emb = infer()
                assert version == "2" and np.abs(emb - models[1].run(pixels)["embedding"]).max() <= 1e-5
            finally:
                client.close()


class Proxy:
    """A TCP relay to PostgreSQL that the test can cut and restore: the database going down and back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        # stop() runs on the test's thread while _accept may be pairing a connection it just took: the
        # lock makes each new pair either relayed and closed by stop(), or closed at once by _accept.
        # (A pair missed by both was closed only by the garbage collector, whose ResourceWarning in a
        # relay thread failed the test that cut the relay.)
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and break the open ones."""
        with self._lock:
            doomed = [s for s in (self._listener, *self._sockets) if s is not None]
            self._listener = None
            self._sockets.clear()
        for s in doomed:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                server = socket.create_connection(self.upstream)
            except OSError:  # PostgreSQL itself unreachable: the client sees a closed connection
                client.close()
                continue
            with self._lock:
                relayed = self._listener is listener
                if relayed:
                    self._sockets += [client, server]
            if not relayed:  # stopped while this pair was made: never relayed
                client.close()
                server.close()
                return
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def relayed(url: str) -> Iterator[tuple[Proxy, str]]:
    """A started Proxy in front of the PostgreSQL at ``url`` and the database URL that goes through
    it; the relay is stopped afterwards."""
    direct = make_url(url)
    proxy = Proxy((direct.host or "127.0.0.1", direct.port or 5432))
    proxy.start()
    try:
        yield proxy, direct.set(port=proxy.port).render_as_string(hide_password=False)
    finally:
        proxy.stop()


def test_a_registry_database_that_goes_down_gives_503_with_retry_after_then_recovers(tmp_path, bundles):
    with postgres_schema() as url, relayed(url) as (proxy, via_proxy):
        keys = populate(test_settings(tmp_path / "home", database_url=url), list(bundles))
        # key_cache_s=0: every request asks the registry about its key.
        settings = test_settings(tmp_path / "home", database_url=via_proxy, key_cache_s=0)
        with running(settings) as server, server.client(keys.predict) as c:
            assert c.get("/v2/models/faces").status_code == 200
            proxy.stop()
            r = c.get("/v2/models/faces")
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert "the registry database" in r.json()["error"] and "is unavailable" in r.json()["error"]
            proxy.start()
            assert c.get("/v2/models/faces").status_code == 200
