"""The attack surface, inventoried: every TCP listener of every process a context
starts is bound to the node address or loopback, or refuses a client without the
secret; none answers an unauthenticated HTTP GET with a 2xx. The Unix sockets in
the abstract namespace (which have no file permissions) refuse such a client too."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import psutil
import pytest
from conftest import QUIET

from sparkorca import OrcaContext, init_orca_context
from sparkorca._wait import wait_for
from sparkorca.data import local_handoff
from sparkorca.node.channel import AuthenticationError
from sparkorca.node.host import node_ip

pytestmark = pytest.mark.engine

# Methods of Ray's gRPC services that need the token: one of them answers on every
# Ray gRPC listener (GCS, raylet node and object managers, agent, core workers).
RAY_METHODS = ("/ray.rpc.InternalKVGcsService/InternalKVKeys",
               "/ray.rpc.NodeManagerService/GetResourceLoad",
               "/ray.rpc.ObjectManagerService/Pull",
               "/ray.rpc.ReporterService/HealthCheck",
               "/ray.rpc.CoreWorkerService/GetCoreWorkerStats",
               "/ray.rpc.RayletDriver/ClusterInfo")


def our_listeners():
    """(ip, port, pid, process) of every TCP listener of this process and its
    descendants (the Spark JVMs, node runners, Ray, TF nodes, TensorBoard)."""
    me = psutil.Process()
    pids = {me.pid: me.name()}
    for p in me.children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        spark_main = [a for a in cmd if a.startswith("org.apache.spark.")]
        # a JVM by its main class: its leading options vary (class-data sharing)
        pids[p.pid] = (f"Spark JVM {spark_main[0][-50:]}" if spark_main
                       else " ".join(cmd[:4])[-60:] or p.name())
    found = []
    for c in psutil.net_connections("tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            found.append((c.laddr.ip, c.laddr.port, c.pid, pids[c.pid]))
    return sorted(set(found), key=lambda x: x[1])


def block_sockets():
    """The names of the Spark -> Ray holders' sockets among this process's
    descendants (sparkorca.data.local_handoff)."""
    pids = {p.pid for p in psutil.Process().children(recursive=True)}
    return sorted({c.laddr[1:] for c in psutil.net_connections("unix")  # an accepted
                   if c.pid in pids and (c.laddr or "").startswith("@sparkorca-blocks-")})


def http_status(host, port):
    """The status of an HTTP GET / with no credentials, or why there is none."""
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            data = s.recv(200)
    except OSError as e:
        return f"no answer ({type(e).__name__})"
    if data.startswith(b"HTTP/"):
        return int(data.split()[1])
    return "closed" if not data else "not HTTP"


def grpc_answers(host, port):
    """The gRPC status codes of Ray methods called without the token (a busy server
    is asked again)."""
    import grpc
    codes = []
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for method in RAY_METHODS:
            call = channel.unary_unary(method, request_serializer=lambda x: x,
                                       response_deserializer=lambda b: b)
            for _ in range(3):
                try:
                    call(b"", timeout=10)
                    codes.append("OK")
                except grpc.RpcError as e:
                    codes.append(e.code().name)
                if codes[-1] != "DEADLINE_EXCEEDED":
                    break
            if codes[-1] in ("UNAUTHENTICATED", "OK", "UNAVAILABLE"):
                break
    return codes


def verdict(ip, port, process):
    """Why a listener is safe, or None when it is not."""
    ip = ip.replace("::ffff:", "")
    host = "127.0.0.1" if ip in ("0.0.0.0", "::") else ip
    status = http_status(host, port)
    answers = isinstance(status, int) and 200 <= status < 300
    if ip in ("127.0.0.1", "::1"):
        if not answers:
            return f"loopback only; GET: {status}"
        # local-cluster runs Spark's own standalone master and worker inside the driver
        # JVM, with their web UIs: a Spark test mode, on loopback only
        return "loopback only; Spark's own web UI" if "Spark JVM" in process else None
    if answers:
        return None  # answers an unauthenticated GET from other machines
    if ip == node_ip():
        return f"node address only; GET: {status}"
    if status in (401, 403):
        return f"all interfaces, HTTP {status} without the token"
    codes = grpc_answers(host, port)
    if codes and codes[-1] == "UNAUTHENTICATED":
        return "all interfaces, gRPC UNAUTHENTICATED without the token"
    return f"UNSAFE (GET: {status}; gRPC: {codes})"


def inventory():
    rows, unsafe = [], []
    for ip, port, pid, what in our_listeners():
        why = verdict(ip, port, what) or "UNSAFE: answers an unauthenticated GET"
        rows.append(f"{port:>6}  {ip:<22} {pid:>7}  {what:<60} {why}")
        if why.startswith("UNSAFE"):
            unsafe.append(rows[-1])
    print("\n  port  bound to                   pid  process" + " " * 54 + "verdict")
    print("\n".join(rows))
    return rows, unsafe


def feed_main(args, ctx):
    """A map_fun that runs until shutdown."""
    feed = ctx.get_data_feed()
    while not feed.should_stop():
        feed.next_batch(10)


def test_no_listener_answers_without_the_secret():
    from pyspark import cloudpickle

    from sparkorca.cluster import TFCluster
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    OrcaContext.log_output = True
    sc = init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           init_ray_on_spark=True, conf=QUIET)
    import ray
    assert ray.get(ray.remote(lambda: 1).remote()) == 1  # core workers listen too
    cluster = TFCluster.run(sc, feed_main, None, num_executors=2, tensorboard=True,
                            input_mode=TFCluster.InputMode.SPARK)
    try:
        url = cluster.tensorboard_url()
        rows, unsafe = inventory()
        assert len(rows) > 10
        assert not unsafe, "listeners answering without the secret:\n" + "\n".join(unsafe)
        # no Prometheus endpoint: not the dashboard head's, the monitor's or an agent's
        names = " ".join(rows)
        assert ":44227" not in names and ":44217" not in names
        assert "ray.util.client" not in names  # no Ray Client server on the head
        # The holders' block sockets (Unix, abstract namespace: any local user can
        # list and reach them) take no block from a peer without the secret
        sockets = wait_for(lambda: len(block_sockets()) >= 2 and block_sockets(), 60,
                           "the two data holders' block sockets")
        for name in sockets:
            with pytest.raises(AuthenticationError):
                local_handoff.connect(name, os.urandom(32))
        # TensorBoard serves only at its secret URL
        import urllib.request
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200
    finally:
        cluster.shutdown()


TWIN = """
    import json, psutil, ray, sys
    from sparkorca import init_orca_context, stop_orca_context, OrcaContext
    init_orca_context(cluster_mode="local", cores=1, memory="1g", init_ray_on_spark=True,
                      conf={"spark.ui.enabled": "false"})
    info = OrcaContext.get_ray_context().address_info
    total = sum(ray.get([ray.remote(lambda i: i).remote(i) for i in range(20)]))
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    ports = sorted({c.laddr.port for c in psutil.net_connections("tcp")
                    if c.status == psutil.CONN_LISTEN and c.pid in pids})
    print(json.dumps({"sum": total, "ports": ports, "gcs": info["gcs_address"],
                      "dir": info["session_dir"]}), flush=True)
    sys.stdin.read()  # both programs run until the test has read both reports
    stop_orca_context()
"""


def test_two_programs_at_once_get_separate_clusters_and_ports():
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(TWIN)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    try:
        for p in procs:
            line = ""
            while not line.startswith('{"sum"'):  # Ray may print before it
                line = p.stdout.readline()
                assert line, p.stderr.read()[-4000:]
            results.append(json.loads(line))
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(120)
    assert [p.returncode for p in procs] == [0, 0]
    assert [r["sum"] for r in results] == [190, 190]
    assert results[0]["gcs"] != results[1]["gcs"] and results[0]["dir"] != results[1]["dir"]
    shared = set(results[0]["ports"]) & set(results[1]["ports"])
    assert not shared, f"both programs listen on {sorted(shared)}"
