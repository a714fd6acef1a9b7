"""RayOnSpark with real Spark and real Ray: start, use, auth, and nothing left behind."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
from conftest import QUIET

from sparkorca import (
    InvalidArgumentError,
    OrcaContext,
    OrcaRuntimeError,
    init_orca_context,
    stop_orca_context,
)
from sparkorca._wait import wait_for
from sparkorca.context import running_context

pytestmark = pytest.mark.engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, env=None, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=timeout, **kwargs)


def _cluster_processes(cluster_id: str):
    """Every live process that carries this Ray cluster's marker in its environment."""
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if p.environ().get("SPARKORCA_RAY_CLUSTER") == cluster_id:
                found.append(p.info["pid"])
        except psutil.Error:
            pass
    return found


def test_local_ray_on_spark(capsys):
    import ray
    sc = init_orca_context(cluster_mode="local", cores=2, memory="1g", init_ray_on_spark=True,
                           env={"SPARKORCA_TEST_ENV": "reached"},
                           extra_params={"labels": json.dumps({"sparkorca-test": "yes"})},
                           conf=QUIET)

    @ray.remote
    def where():
        return os.environ.get("SPARKORCA_TEST_ENV"), ray.get_runtime_context().get_node_id()

    env_seen, node_id = ray.get(where.remote())  # the driver is connected at once
    assert env_seen == "reached"
    ctx = OrcaContext.get_ray_context()
    info = ctx.address_info
    for key in ("node_ip_address", "gcs_address", "object_store_address", "session_dir"):
        assert info[key], key
    assert info["webui_url"] is None  # dashboard off by default
    assert ctx.redis_address == info["gcs_address"]
    # a local master has one executor, the driver JVM: the head is its node, with its CPUs
    (node,) = ctx.nodes()
    assert node["is_head"] and node["executor_id"] == "driver"
    assert node["resources"]["CPU"] == 2 and node_id == node["node_id"]
    labels = [n.get("Labels", {}) for n in ray.nodes()]
    assert all(lab.get("sparkorca-test") == "yes" for lab in labels)  # extra_params reached

    def from_spark_task(rows):
        import ray as r

        import sparkorca.ray
        sparkorca.ray.connect()

        @r.remote
        def square(x):
            return x * x
        yield sum(r.get([square.remote(x) for x in rows]))

    assert sc.parallelize(range(4), 1).mapPartitions(from_spark_task).collect() == [14]
    cluster_id = running_context().ray._backend.cluster_id
    stop_orca_context()
    assert not ray.is_initialized()
    wait_for(lambda: not _cluster_processes(cluster_id), 30, "Ray processes to exit")


def test_executor_loss_kills_its_raylet_and_is_reported():
    import ray
    OrcaContext.barrier_mode = False
    init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                      init_ray_on_spark=True, conf=QUIET)
    ctx = OrcaContext.get_ray_context()
    raylets = [n for n in ctx.nodes() if not n["is_head"]]
    assert len(raylets) == 2
    assert len({n["executor_id"] for n in raylets}) == 2  # one raylet per executor
    assert all(n["resources"]["CPU"] == 1 for n in raylets)

    @ray.remote(num_cpus=1)
    class Holder:  # holds its CPU while alive: two of them need both 1-CPU raylets
        def node(self):
            return ray.get_runtime_context().get_node_id()

    holders = [Holder.remote() for _ in range(2)]
    assert len(set(ray.get([h.node.remote() for h in holders]))) == 2
    for h in holders:
        ray.kill(h)

    @ray.remote(num_cpus=1)
    def node_of_task():
        return ray.get_runtime_context().get_node_id()

    backend = running_context().ray._backend
    victim = backend.raylets[0]
    runner = psutil.Process(victim["runner_pid"])
    os.kill(victim["executor_pid"], signal.SIGKILL)
    lost = wait_for(lambda: [n for n in ctx.lost_nodes()
                             if n["executor_id"] == victim["executor_id"]],
                    30, f"the raylet of killed executor {victim['executor_id']} to be reported")
    assert lost[0]["node_name"] == victim["node_name"]
    wait_for(lambda: not runner.is_running() or runner.status() == psutil.STATUS_ZOMBIE, 30,
             "the killed executor's node runner to exit")
    assert not os.path.exists(victim["temp_dir"])
    # the rest of the cluster still works
    assert ray.get(node_of_task.remote()) != lost[0]["node_id"]


def test_seed_parameter_server_runs_on_standalone(standalone_cluster):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "ray_parameter_server.py"),
         "--cluster-mode", "standalone", "--master", standalone_cluster.master_url,
         "--num-nodes", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "redis_address:" in out.stdout
    # an actor still alive at stop ends quietly: the driver leaves before the nodes go
    noise = [line for line in (out.stdout + out.stderr).splitlines()
             if "Unhandled error" in line or "died" in line]
    assert not noise, noise
    # the printed parameters: ten numbers >= 1 (numpy may wrap the array over lines)
    text = out.stdout[out.stdout.index("redis_address:"):]
    start = text.index("\n[") + 1
    values = [float(v) for v in text[start:text.index("]", start)].strip("[]").split()]
    assert len(values) == 10 and min(values) >= 1.0


KILLED_DRIVER = """
    import json, sys, time
    from sparkorca import init_orca_context, OrcaContext
    from sparkorca.context import running_context
    init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                      init_ray_on_spark=True,
                      conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"})
    b = running_context().ray._backend
    print(json.dumps({"cluster_id": b.cluster_id}), flush=True)
    time.sleep(3600)
"""


def test_kill_9_of_the_driver_leaves_no_ray_process():
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_DRIVER)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line, "the driver died before its cluster came up"
        cluster_id = json.loads(line)["cluster_id"]
        assert len(_cluster_processes(cluster_id)) > 5  # head, 2 raylets, agents, ...
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not _cluster_processes(cluster_id), 30,
             "every Ray process of the killed driver's cluster to exit")
    wait_for(lambda: not [d for d in os.listdir("/tmp") if cluster_id in d], 30,
             "the cluster's temp dirs to be removed")


def test_auth_refuses_clients_without_the_token(tmp_path):
    init_orca_context(cluster_mode="local", cores=1, memory="1g", init_ray_on_spark=True,
                      conf=QUIET)
    gcs = OrcaContext.get_ray_context().address_info["gcs_address"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    clean["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    # a refused client retries its GCS connection once a second, 20 times by default
    clean["RAY_gcs_server_port_wait_time_s"] = "3"
    probe = f"""
        import ray
        try:
            ray.init(address="{gcs}")
            print("CONNECTED", ray.cluster_resources())
        except Exception as e:
            print("REFUSED", type(e).__name__, e)
    """
    envs = {"no token": clean,
            "wrong token": {**clean, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "f" * 64}}
    probes = {name: subprocess.Popen([sys.executable, "-c", textwrap.dedent(probe)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for name, env in envs.items()}  # both at once: a refused client retries a while
    for name, p in probes.items():
        out, err = p.communicate(timeout=300)
        assert "REFUSED" in out and "CONNECTED" not in out, (name, out, err[-2000:])


def test_works_when_a_foreign_ray_auth_token_file_exists(tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("a" * 64)  # what a plain ray.init leaves
    code = """
        import ray
        from sparkorca import init_orca_context, stop_orca_context
        init_orca_context(cluster_mode="local", cores=1, memory="1g", init_ray_on_spark=True,
                          conf={"spark.ui.enabled": "false"})
        print("RESULT", ray.get(ray.remote(lambda: 41 + 1).remote()))
        stop_orca_context()
    """
    out = _python(code, env={**os.environ, "HOME": str(tmp_path)})
    assert "RESULT 42" in out.stdout, out.stderr[-4000:]


def test_runtime_ray_without_spark():
    import ray
    ctx = init_orca_context(runtime="ray", cores=2)
    assert ray.get(ray.remote(lambda: "ok").remote()) == "ok"
    assert ray.cluster_resources()["CPU"] == 2
    assert ctx.redis_address == ctx.address_info["gcs_address"]
    with pytest.raises(Exception, match="has no Spark"):
        OrcaContext.get_spark_context()
    assert (ctx.runtime, ctx.num_ray_nodes, ctx.ray_node_cpu_cores) == ("ray", 1, 2)
    ctx.stop()
    assert not ray.is_initialized() and not ctx.initialized
    assert OrcaContext.get_ray_context() is ctx and ctx.initialized  # started again
    assert ray.get(ray.remote(lambda: "again").remote()) == "again"
    ctx.stop()
    again = init_orca_context(runtime="ray", cores=1)  # a stopped ray runtime starts afresh
    assert again.initialized and ray.cluster_resources()["CPU"] == 1
    stop_orca_context()
    assert not ray.is_initialized()


def test_ray_request_larger_than_the_spark_app_is_refused_before_start():
    from pyspark import SparkContext
    with pytest.raises(InvalidArgumentError, match=r"num_ray_nodes=3 .*at most 2, the number "
                                                   r"of Spark executors"):
        init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1,
                          init_ray_on_spark=True, num_ray_nodes=3)
    with pytest.raises(InvalidArgumentError, match=r"ray_node_cpu_cores=4 .*at most 2"):
        init_orca_context(cluster_mode="standalone", master="spark://127.0.0.1:7077",
                          num_nodes=2, cores=2, init_ray_on_spark=True, ray_node_cpu_cores=4)
    with pytest.raises(InvalidArgumentError, match=r"num_ray_nodes=2 .*at most 1"):
        init_orca_context(cluster_mode="local", cores=2, init_ray_on_spark=True,
                          num_ray_nodes=2)
    with pytest.raises(InvalidArgumentError, match="object_store_memory='10m'.*78m"):
        init_orca_context(cluster_mode="local", init_ray_on_spark=True,
                          object_store_memory="10m")
    assert SparkContext._gateway is None  # nothing started


def test_a_node_that_fails_to_start_reports_its_output_and_leaves_nothing():
    with pytest.raises(OrcaRuntimeError) as err:
        init_orca_context(cluster_mode="local", cores=1, init_ray_on_spark=True,
                          extra_params={"no-such-ray-option": "1"}, conf=QUIET)
    msg = str(err.value)
    assert "failed to start" in msg and "no-such-ray-option" in msg  # ray start's own words
    from pyspark import SparkContext
    assert SparkContext._gateway is None


def test_runtime_ray_connects_to_an_existing_cluster(monkeypatch):
    """address=... joins a running Ray cluster, authenticated by the caller's token."""
    import secrets

    import ray

    from sparkorca.node.host import node_ip
    from sparkorca.node.hub import NodeHub
    from sparkorca.ray.cluster import auth_env, refresh_ray_auth
    from sparkorca.ray.node import RayNodeConfig, launch_ray_node
    from sparkorca.ray.raylet_task import node_temp_dir
    host, token, secret = node_ip(), "b" * 64, secrets.token_bytes(32)
    hub = NodeHub("127.0.0.1", secret, expected=[("head", "the test's head")])
    config = RayNodeConfig(
        cluster_id="test", secret=secret.hex(), hub_host="127.0.0.1", hub_port=hub.address[1],
        ready_timeout=60, head=True, stop_grace=0, env=auth_env(token),
        options={"head": True, "port": 0, "node_ip_address": host, "num_cpus": 1,
                 "include_dashboard": "false", "disable_usage_stats": True})
    head = launch_ray_node(config.placed(name="head", host=host, owner_pid=os.getpid(),
                                         temp_dir=node_temp_dir("test", "head")),
                           "a Ray head for the test")
    try:
        address = head.wait_ready()["gcs_address"]
        for k, v in auth_env(token).items():
            monkeypatch.setenv(k, v)
        refresh_ray_auth()
        ctx = init_orca_context(runtime="ray", address=address)
        assert ctx.address_info["gcs_address"] == address
        assert ray.get(ray.remote(lambda: "joined").remote()) == "joined"
        stop_orca_context()  # disconnects; the cluster is not ours to stop
        assert head.proc.poll() is None
    finally:
        head.stop()
        hub.close()
