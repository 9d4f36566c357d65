"""The registry transport through the harness's FaultProxy: dropped connections, 503/429,
stalls beyond the read timeout, and the pool's keep-alive connections."""

from __future__ import annotations

import threading
import time

import pytest

from faultproxy import FaultProxy
from test_transport import DOCKER_MANIFEST, blob_file, digest_of, image_manifest, upload
from regcarve.sinks.registry import RegistryRefused, RegistryUnavailable
from regcarve.sinks.registry.transport import ConnectionSettings, RetryPolicy, Timeouts, Transport

FAST = RetryPolicy(attempts=4, first_delay=0.05, max_delay=0.2)
UPLOAD_PUT = r"/blobs/uploads/.+"


def logged(proxy: FaultProxy, method: str, path: str, count: int) -> list:
    """The proxy's log entries, once it holds `count` of them: it writes each after answering."""
    deadline = time.monotonic() + 5
    while len(proxy.requests(method, path)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return proxy.requests(method, path)


def through(proxy: FaultProxy, **settings) -> Transport:
    return Transport(proxy.host, settings=ConnectionSettings(**{"plain_http": True, "retry": FAST, **settings}))


@pytest.mark.parametrize("after", ["headers", "body"])
def test_a_dropped_blob_upload_is_sent_again(proxy, registry, tmp_path, after):
    path, digest, data = blob_file(tmp_path, 1_000_000)
    proxy.drop("PUT", UPLOAD_PUT, after=after)
    with through(proxy) as t:
        stored = upload(t, "faults/drop", path, digest)
        assert stored.status == 201 and stored.attempts == 2
        counters = t.counters
    assert counters.retries == 1 and counters.requests["PUT"] == 2
    assert counters.bytes_sent >= len(data) + (len(data) if after == "body" else 0)
    assert [r.status for r in logged(proxy, "PUT", UPLOAD_PUT, 2)] == [None, 201]
    assert registry.request("GET", f"/v2/faults/drop/blobs/{digest}")[2] == data


def test_a_503_on_the_manifest_put_is_retried(proxy, registry, tmp_path):
    config = b'{"os":"linux"}'
    path = tmp_path / "config"
    path.write_bytes(config)
    manifest = image_manifest((config, digest_of(config)), [])
    proxy.fail("PUT", "/manifests/", 503)
    with through(proxy) as t:
        upload(t, "faults/m", path, digest_of(config))
        put = t.request("PUT", "/v2/faults/m/manifests/v1", headers={"Content-Type": DOCKER_MANIFEST},
                        body=manifest, expect=(201,))
    assert put.attempts == 2 and [r.status for r in logged(proxy, "PUT", "/manifests/", 2)] == [503, 201]
    assert registry.manifest("faults/m", "v1")[2] == manifest


def test_a_lost_answer_is_visible_to_the_caller(proxy, tmp_path):
    """The registry stored the blob but the answer was lost: the retried PUT finds its upload
    session gone. The refusal says an earlier attempt was made (attempts > 1), so the caller
    can check with a HEAD before calling it a failure. (The registry may answer that 404 before
    reading the body and close, which the proxy passes on as one more drop: hence >= 2.)"""
    path, digest, _ = blob_file(tmp_path)
    proxy.drop("PUT", UPLOAD_PUT, after="forward")
    with through(proxy) as t:
        with pytest.raises(RegistryRefused) as refused:
            upload(t, "faults/lost", path, digest)
        assert (refused.value.status, refused.value.code) == (404, "BLOB_UPLOAD_UNKNOWN")
        assert refused.value.attempts >= 2
        assert t.request("HEAD", f"/v2/faults/lost/blobs/{digest}", expect=(200, 404)).status == 200


def test_persistent_503_gives_up_after_the_bounded_retries(proxy):
    proxy.fail("HEAD", "/blobs/", 503, times=None)
    with through(proxy) as t:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable) as failed:
            t.request("HEAD", f"/v2/faults/down/blobs/{digest_of(b'')}", expect=(200, 404))
        assert time.monotonic() - started < 2
        e = failed.value
        assert (e.attempts, e.status, e.errors) == (4, 503, ())
        assert str(e).startswith(f"{proxy.host}: HEAD /v2/faults/down/blobs/sha256:")
        assert ": HTTP 503 (4 attempts in " in str(e)  # a HEAD answer has no error body
        assert t.counters.retries == 3 and len(logged(proxy, "HEAD", "", 4)) == 4


def test_total_time_bounds_the_retries(proxy):
    proxy.fail("GET", "/tags/list", 503, times=None)
    policy = RetryPolicy(attempts=100, total_seconds=0.5, first_delay=0.1, max_delay=0.1)
    with through(proxy) as t:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            t.request("GET", "/v2/faults/t/tags/list", retry=policy)
        # no new attempt starts past the budget; one in flight then may end a little after it
        assert time.monotonic() - started < 1.0
        assert 3 <= proxy.count("GET", "/tags/list") <= 10


def test_429_retry_after_is_honoured(proxy):
    proxy.fail("HEAD", "/blobs/", 429, retry_after="1")
    with through(proxy) as t:
        started = time.monotonic()
        assert t.request("HEAD", f"/v2/faults/slow/blobs/{digest_of(b'')}", expect=(200, 404)).status == 404
        assert 1.0 <= time.monotonic() - started < 2
        assert t.counters.retries == 1


def test_retry_after_is_capped(proxy):
    proxy.fail("HEAD", "/blobs/", 429, retry_after="3600")
    policy = RetryPolicy(attempts=3, max_retry_after=0.3)
    with through(proxy) as t:
        started = time.monotonic()
        t.request("HEAD", f"/v2/faults/cap/blobs/{digest_of(b'')}", expect=(200, 404), retry=policy)
        assert 0.3 <= time.monotonic() - started < 1.5


def test_a_stall_beyond_the_read_timeout_is_retried(proxy):
    proxy.stall("HEAD", "/blobs/", seconds=5)
    with through(proxy, timeouts=Timeouts(connect=2, read=0.5)) as t:
        t.ping()
        started = time.monotonic()
        assert t.request("HEAD", f"/v2/faults/stall/blobs/{digest_of(b'')}", expect=(200, 404)).status == 404
        assert time.monotonic() - started < 2.5
        assert t.counters.retries == 1


def test_a_registry_that_never_answers_is_given_up(proxy):
    proxy.stall("GET", "/manifests/", seconds=10, times=None)
    with through(proxy, timeouts=Timeouts(connect=2, read=0.3),
                 retry=RetryPolicy(attempts=2, first_delay=0.05)) as t:
        t.ping()
        with pytest.raises(RegistryUnavailable, match=r"GET /v2/faults/x/manifests/v1: no answer within 0.3 s "
                                                      r"\(2 attempts in \d+ s\)$"):
            t.request("GET", "/v2/faults/x/manifests/v1")


def test_threads_share_keep_alive_connections(proxy):
    """16 threads, 4 connections: every request goes over one of at most 4 kept-alive connections."""
    failures: list[BaseException] = []
    with through(proxy, connections=4) as t:
        t.ping()

        def worker() -> None:
            try:
                for _ in range(10):
                    t.request("HEAD", f"/v2/faults/pool/blobs/{digest_of(b'')}", expect=(200, 404))
            except BaseException as e:  # pragma: no cover - reported below
                failures.append(e)
        threads = [threading.Thread(target=worker) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures
    heads = logged(proxy, "HEAD", "", 160)
    assert len(heads) == 160 and len({r.conn for r in heads}) <= 4
