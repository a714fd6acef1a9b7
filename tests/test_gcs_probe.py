"""RayOnSpark's GCS readiness probe (gRPC's health check) without a Ray cluster: it
answers, refuses what is not a serving gRPC server, and closes its connection (it
runs every few hundred ms while a head starts, in the driver)."""

import os
import socket
from concurrent import futures

import pytest

grpc = pytest.importorskip("grpc")

from sparkorca._wait import wait_for  # noqa: E402
from sparkorca.ray.cluster import gcs_serving  # noqa: E402

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def _health_server(status: bytes):
    """A gRPC server on 127.0.0.1 whose health check answers ``status`` (the
    serialized HealthCheckResponse)."""
    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            lambda request, context: status,
            request_deserializer=lambda b: b, response_serializer=lambda b: b)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_serving_gcs_is_seen_and_every_probe_closes_its_connection():
    server, address = _health_server(b"\x08\x01")  # status: SERVING
    try:
        before = _open_fds()
        assert all(gcs_serving(address) for _ in range(30))
        # a probe that kept its channel would keep a socket here (and the server's end)
        wait_for(lambda: _open_fds() <= before, 10, "the probes' sockets to close")
    finally:
        server.stop(None)


def test_what_is_not_a_serving_gcs_is_refused():
    server, address = _health_server(b"\x08\x02")  # status: NOT_SERVING
    try:
        assert not gcs_serving(address)
    finally:
        server.stop(None)
    with socket.socket() as silent:  # accepts, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        assert not gcs_serving(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not gcs_serving(f"127.0.0.1:{port}", timeout=0.5)  # nothing listens
