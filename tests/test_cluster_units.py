"""TFCluster's pure parts: roles and environments, the row codec, the epoch store,
the authenticated channel. No Spark here."""

import getpass
import json
import logging
import socket
import threading
import types

import numpy as np
import pyarrow as pa
import pytest

from sparkorca.cluster import TFNode, roles, rows
from sparkorca.cluster.node_config import TFNodeConfig
from sparkorca.cluster.node_context import NodeContext, absolute_path
from sparkorca.cluster.reservation import ReservationServer
from sparkorca.cluster.store import DiskStore, MemoryStore
from sparkorca.errors import InvalidArgumentError, OrcaRuntimeError
from sparkorca.node.channel import AuthenticationError, Channel, connect_tcp


def test_roles_follow_tensorflowonspark_layout():
    plan = roles.plan_roles(5, num_ps=1, master_node="chief", eval_node=True)
    assert [(r.worker_num, r.job_name, r.task_index) for r in plan] == [
        (0, "ps", 0), (1, "chief", 0), (2, "evaluator", 0), (3, "worker", 0), (4, "worker", 1)]
    assert [r.fed for r in plan] == [False, True, False, True, True]
    assert all(r.on_driver for r in roles.plan_roles(3, 1, driver_ps_nodes=True)[:1])


@pytest.mark.parametrize("kwargs, name", [
    ({"num_executors": 0}, "num_executors"),
    ({"num_executors": 2, "num_ps": 2}, "num_executors"),
    ({"num_executors": 2, "num_ps": 1, "eval_node": True}, "num_executors"),
    ({"num_executors": 2, "num_ps": -1}, "num_ps"),
    ({"num_executors": "2"}, "num_executors"),
    ({"num_executors": 2, "master_node": "ps"}, "master_node"),
    ({"num_executors": 2, "driver_ps_nodes": True}, "driver_ps_nodes"),
    ({"num_executors": 2, "eval_node": "yes"}, "eval_node"),
])
def test_bad_cluster_shapes_are_refused_naming_the_parameter(kwargs, name):
    with pytest.raises(InvalidArgumentError) as e:
        roles.plan_roles(**kwargs)
    assert e.value.name == name and name in str(e.value)


INFO = [
    {"worker_num": 0, "job_name": "ps", "task_index": 0, "host": "10.0.0.1", "port": 7000},
    {"worker_num": 1, "job_name": "chief", "task_index": 0, "host": "10.0.0.1", "port": 7001},
    {"worker_num": 2, "job_name": "worker", "task_index": 0, "host": "10.0.0.2", "port": 7002},
    {"worker_num": 3, "job_name": "worker", "task_index": 1, "host": "10.0.0.1", "port": 7003},
]


def test_tf_config_has_the_whole_cluster_and_the_task():
    cfg = json.loads(roles.tf_config(INFO, "worker", 1))
    assert cfg == {"cluster": {"chief": ["10.0.0.1:7001"], "ps": ["10.0.0.1:7000"],
                               "worker": ["10.0.0.2:7002", "10.0.0.1:7003"]},
                   "task": {"type": "worker", "index": 1}}


def test_torch_env_ranks_the_chief_first_and_skips_ps():
    assert roles.torch_env(INFO, "chief", 0) == {}
    env = {k: roles.torch_env(INFO, "chief", k) for k in (1, 2, 3)}
    assert [env[k]["RANK"] for k in (1, 2, 3)] == ["0", "1", "2"]
    assert {e["MASTER_ADDR"] + ":" + e["MASTER_PORT"] for e in env.values()} == {"10.0.0.1:7001"}
    assert {e["WORLD_SIZE"] for e in env.values()} == {"3"}
    # two training nodes on 10.0.0.1 (chief, worker 1), one on 10.0.0.2
    assert (env[1]["LOCAL_RANK"], env[3]["LOCAL_RANK"], env[2]["LOCAL_RANK"]) == ("0", "1", "0")
    assert env[3]["LOCAL_WORLD_SIZE"] == "2"
    assert roles.num_workers(INFO) == 3


USER = getpass.getuser()


@pytest.mark.parametrize("default_fs, path, expected", [
    # TFoS's own test_TFNode.test_hdfs_path cases (working_dir: the driver's cwd)
    ("file://", "/foo/bar", "file:///foo/bar"),
    ("file://", "foo/bar", "file:///home/u/job/foo/bar"),
    ("hdfs://", "/foo/bar", "hdfs:///foo/bar"),
    ("hdfs://", "foo/bar", f"hdfs:///user/{USER}/foo/bar"),
    ("viewfs://", "/foo/bar", "viewfs:///foo/bar"),
    ("viewfs://", "foo/bar", f"viewfs:///user/{USER}/foo/bar"),
    # a namenode / nameservice
    ("hdfs://nn:8020", "/foo/bar", "hdfs://nn:8020/foo/bar"),
    ("hdfs://nn:8020", "foo/bar", f"hdfs://nn:8020/user/{USER}/foo/bar"),
    ("viewfs://ns1", "foo/bar", f"viewfs://ns1/user/{USER}/foo/bar"),
    # other schemes: the path right under defaultFS
    ("s3a://bkt", "/foo/bar", "s3a://bkt/foo/bar"),
    ("s3a://bkt", "foo/bar", "s3a://bkt/foo/bar"),
    # deviations from TFoS's accidents: a trailing slash of defaultFS is dropped
    ("hdfs://nn:8020/", "/foo/bar", "hdfs://nn:8020/foo/bar"),  # TFoS: hdfs://nn:8020//foo/bar
    ("hdfs://nn:8020/", "foo/bar", f"hdfs://nn:8020/user/{USER}/foo/bar"),
    ("file:///", "/foo/bar", "file:///foo/bar"),  # TFoS: file:////foo/bar
    ("file:///", "foo/bar", "file:///home/u/job/foo/bar"),
])
def test_absolute_path_follows_tfos_hdfs_path(default_fs, path, expected):
    assert absolute_path(default_fs, "/home/u/job", path) == expected


@pytest.mark.parametrize("default_fs", ["file://", "hdfs://", "viewfs://", "hdfs://nn:8020"])
@pytest.mark.parametrize("path", ["hdfs://foo/bar", "viewfs://foo/bar", "file://foo/bar",
                                  "file:///tmp/x", "s3://b/x", "wasb://c@a/x",
                                  # TFoS treated these as relative ("file:///cwd/gs://b/x")
                                  "gs://b/x", "abfs://c@a/x", "file:/tmp/x"])
def test_absolute_path_keeps_a_path_that_has_a_scheme(default_fs, path):
    assert absolute_path(default_fs, "/home/u/job", path) == path


def test_absolute_path_with_a_relative_working_dir_uses_this_process_cwd(tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)  # TFParallel's ctx has working_dir "."
    # TFoS gave "file:////foo/bar": the relative path put under the root
    assert absolute_path("file://", ".", "foo/bar") == f"file://{tmp_path}/foo/bar"
    assert absolute_path("file://", "/", "foo/bar") == "file:///foo/bar"
    assert absolute_path("file://", "/home/u/job/", "m") == "file:///home/u/job/m"


def test_hdfs_path_reads_defaultfs_and_working_dir_of_any_ctx(caplog):
    ctx = types.SimpleNamespace(defaultFS="hdfs://", working_dir="/home/u/job")
    assert TFNode.hdfs_path(ctx, "foo/bar") == f"hdfs:///user/{USER}/foo/bar"
    assert "Unknown scheme" not in caplog.text
    ctx.defaultFS = "s3a://bkt"
    assert TFNode.hdfs_path(ctx, "foo/bar") == "s3a://bkt/foo/bar"
    assert "Unknown scheme s3a://bkt with relative path: foo/bar" in caplog.text


def node_context(**cfg):
    config = TFNodeConfig(cluster_id="c1", executor_id="3", host="10.0.0.2", worker_num=2,
                          job_name="worker", task_index=1, default_fs="hdfs://nn:8020",
                          working_dir="/home/u/job", **cfg)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return NodeContext(config, sock.getsockname()[1], INFO, None, sock), sock


def test_node_context_has_tfos_attributes_and_methods():
    ctx, sock = node_context()
    try:
        assert (ctx.executor_id, ctx.worker_num) == (2, 2)  # TFoS: both the node's number
        assert (ctx.job_name, ctx.task_index) == ("worker", 1)
        assert ctx.spark_executor_id == "3"
        assert ctx.cluster_spec == roles.cluster_spec(INFO) and ctx.num_workers == 3
        assert (ctx.defaultFS, ctx.working_dir, ctx.mgr) == ("hdfs://nn:8020", "/home/u/job", None)
        assert ctx.absolute_path("/x") == "hdfs://nn:8020/x"
        for name in ("get_data_feed", "release_port", "export_saved_model",
                     "start_cluster_server"):
            assert callable(getattr(ctx, name))
        with pytest.raises(OrcaRuntimeError, match="InputMode.TENSORFLOW"):
            ctx.get_data_feed()  # no feed: says why, not an AttributeError on None
    finally:
        sock.close()


def test_release_port_closes_the_socket_once_then_warns(caplog):
    ctx, sock = node_context()
    assert ctx.tmp_socket is sock and sock.fileno() >= 0
    ctx.release_port()
    assert ctx.tmp_socket is None and sock.fileno() == -1
    with caplog.at_level(logging.WARNING, logger="sparkorca.cluster.node_context"):
        ctx.release_port()
    assert "release_port() invoked with no bound socket." in caplog.text


def test_tf1_helpers_raise_saying_what_replaces_them():
    ctx, sock = node_context()
    sock.close()
    for call in (lambda: ctx.start_cluster_server(), lambda: TFNode.start_cluster_server(ctx)):
        with pytest.raises(OrcaRuntimeError, match="TF_CONFIG.*tf.distribute"):
            call()
    for call in (lambda: ctx.export_saved_model(None, "/m", "serve", {}),
                 lambda: TFNode.export_saved_model(None, "/m", "serve", {})):
        with pytest.raises(OrcaRuntimeError, match="compat.export_saved_model.*model.export"):
            call()
    for name, args in [("next_batch", (None, 10)), ("batch_results", (None, [1])),
                       ("terminate", (None,))]:
        with pytest.raises(OrcaRuntimeError, match=f"TFNode.{name}.*use TFNode.DataFeed"):
            getattr(TFNode, name)(*args)


def _roundtrip(data):
    return [r for b in rows.rows_to_batches(data) for r in rows.batch_to_rows(b)]


def test_rows_round_trip_through_arrow():
    tuples = [(np.full(3, i, dtype=np.float32), i, f"s{i}") for i in range(5000)]
    back = _roundtrip(tuples)
    assert len(back) == 5000 and back[7][1:] == (7, "s7")
    assert back[7][0].dtype == np.float32 and back[7][0].tolist() == [7, 7, 7]
    assert _roundtrip([1.5, 2.5]) == [1.5, 2.5]
    assert _roundtrip([[1, [1, 2]], [2, [3]]]) == [(1, [1, 2]), (2, [3])]
    arrays = _roundtrip([np.eye(2) * i for i in range(3)])
    assert arrays[2].shape == (2, 2) and arrays[2][1, 1] == 2
    # what Arrow cannot hold travels pickled
    assert _roundtrip([{"a": 1}, {"b": [2]}]) == [{"a": 1}, {"b": [2]}]
    ragged = _roundtrip([(1, np.zeros(2)), (2, np.zeros(3))])
    assert [r[1].shape for r in ragged] == [(2,), (3,)]


def test_rows_to_numpy_without_python_rows():
    batch = next(rows.rows_to_batches([(np.arange(4, dtype=np.float32) + i, i) for i in range(10)]))
    cols = rows.batch_to_numpy(batch)
    assert cols["_0"].shape == (10, 4) and cols["_0"].dtype == np.float32
    assert cols["_1"].tolist() == list(range(10))
    spark_like = pa.RecordBatch.from_pydict({"x": [[1.0, 2.0], [3.0, 4.0]], "y": [0, 1]})
    assert rows.batch_to_numpy(spark_like)["x"].shape == (2, 2)
    assert rows.batch_to_rows(spark_like) == [([1.0, 2.0], 0), ([3.0, 4.0], 1)]


def test_batches_stay_bounded_in_size():
    data = (np.zeros(1024, dtype=np.float32) for _ in range(20000))  # 80 MB of rows
    sizes = [b.nbytes for b in rows.rows_to_batches(data)]
    assert sum(sizes) == 20000 * 4096
    assert max(sizes) <= 2 * rows.TARGET_BATCH_BYTES


def test_disk_store_replays_one_part_at_a_time(tmp_path):
    batches = [pa.RecordBatch.from_pydict({"x": list(range(i * 10, i * 10 + 10))})
               for i in range(8)]
    disk, mem = DiskStore(str(tmp_path / "s"), 4), MemoryStore()
    for b in batches:
        disk.add(b)
        mem.add(b)
    parts = [sum(b.num_rows for b in p) for p in disk.parts()]
    assert parts == [20, 20, 20, 20]
    replayed = sorted(x for p in disk.parts() for b in p for x in b.column(0).to_pylist())
    assert replayed == list(range(80))
    assert [len(p) for p in mem.parts()] == [8]
    disk.close()
    assert not list((tmp_path / "s").iterdir())


def test_channel_authenticates_both_ways():
    a, b = socket.socketpair()
    server = {}
    t = threading.Thread(target=lambda: server.update(ch=Channel.accept(a, b"s" * 32)))
    t.start()
    client = Channel.connect(b, b"s" * 32)
    t.join()
    client.send({"hello": [1, 2]})
    assert server["ch"].recv() == {"hello": [1, 2]}

    a, b = socket.socketpair()
    errors = []

    def accept():
        try:
            Channel.accept(a, b"right" * 8)
        except AuthenticationError as e:
            errors.append(e)
            a.close()
    t = threading.Thread(target=accept)
    t.start()
    with pytest.raises(AuthenticationError):
        Channel.connect(b, b"wrong" * 8)
    t.join()
    assert errors


def test_reservation_server_refuses_peers_without_the_secret():
    server = ReservationServer("127.0.0.1", b"k" * 32, roles.plan_roles(1))
    try:
        with pytest.raises(AuthenticationError):
            connect_tcp(*server.address, b"x" * 32)
        # a peer that sends a pickle instead of the handshake is dropped unread
        s = socket.create_connection(server.address)
        s.recv(32)
        s.sendall(b"\x80\x04\x95" + b"\x00" * 61)
        assert s.recv(10) == b""
        s.close()
        assert server.wait(lambda: server.refused >= 2, 10) is None
        assert all(n.info is None for n in server.nodes.values())
    finally:
        server.close()
