"""One TFCluster node: ``python -m sparkorca.cluster.node``, launched by a Spark task
(or by the driver for ``driver_ps_nodes``) through the node layer.

The launch brings a TFNodeConfig and the cloudpickled ``(map_fun, tf_args)`` (so
the cluster secret is in neither a command line nor Spark conf). The node
reserves its port, starts its feed socket and TensorBoard, registers with the
driver's hub, and once the driver has sent the whole cluster it sets TF_CONFIG
and the torch.distributed variables, answers READY, and runs
``map_fun(tf_args, ctx)``.

It stops, killing what it started and removing its temp dir, when: its owner
exits (the executor JVM, or the driver); its launching task ends before
detaching; the driver says stop or goes away; SIGTERM; or map_fun ends (at once
in InputMode.TENSORFLOW and for ps/evaluator nodes; at shutdown for fed nodes,
which keep answering feeders that they are finished, or map_fun's traceback,
until then).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Optional

from .._process import Child, kill_tree
from .._wait import wait_for
from ..errors import OrcaRuntimeError
from ..node import control
from ..node.handoff import Handoff, read_launch, wait_until_released
from ..node.host import node_dir, redirect_tempdir
from ..node.launch import RunningNode, launch
from . import roles as rolemod
from .node_config import TFNodeConfig

if TYPE_CHECKING:
    from ..node.channel import Channel
    from .feed import FeedHub

log = logging.getLogger("sparkorca.cluster.node")
MODULE = "sparkorca.cluster.node"
KIND = "tf"
_TENSORBOARD_URL = re.compile(r"TensorBoard \S+ at http://[^:/\s]+:(\d+)/")


def node_temp_dir(cluster_id: str, worker_num: int) -> str:
    return node_dir(KIND, cluster_id, worker_num)


def launch_node(cfg: TFNodeConfig, payload: bytes, env: dict, where: str) -> RunningNode:
    """Start the node process for ``cfg``; ``wait_ready()`` next. Its output goes
    to the launcher's stderr: the executor's log."""
    return launch(MODULE, cfg, f"{cfg.describe()} {where}", env=env, payload=payload)


class Node:
    def __init__(self, cfg: TFNodeConfig, map_fun, tf_args, handoff: Handoff):
        self.cfg = cfg
        self.map_fun = map_fun
        self.tf_args = tf_args
        self.handoff = handoff
        self.feed: Optional[FeedHub] = None  # the FeedHub of a fed node
        self.control: Optional[Channel] = None
        self.tensorboard: Optional[Child] = None
        self._exit_lock = threading.Lock()
        self._stop_read, self._stop_write = os.pipe()
        self._watcher = threading.Thread(target=self._watch, name="sparkorca-node-watch",
                                         daemon=True)

    # -- ending -------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        try:
            os.write(self._stop_write, reason.encode()[:200] or b"x")
        except OSError:
            pass

    def exit(self, code: int, reason: str) -> None:
        """Kill what this node started, remove its temp dir, and end the process."""
        if not self._exit_lock.acquire(blocking=False):
            # another thread is ending the process (e.g. the driver said stop while
            # map_fun raised): wait for its os._exit here, so this thread cannot run
            # on, or end the interpreter before that thread has cleaned up
            threading.Event().wait()
        log.info("node %s stops: %s", self.cfg.worker_num, reason)
        try:
            if self.feed is not None:
                self.feed.close()
            for child in _children():
                kill_tree(child, timeout=5)
            shutil.rmtree(self.cfg.temp_dir, ignore_errors=True)
            if self.cfg.serialize_data_creator:
                try:
                    os.remove(self.cfg.lock_path)
                except OSError:
                    pass
            if self.control is not None:
                self.control.close()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _watch(self) -> None:
        reason = wait_until_released(self.cfg.owner_pid, {self._stop_read: "stop"})
        if reason == "stop":
            reason = os.read(self._stop_read, 200).decode(errors="replace") or "asked to stop"
        self.exit(1, reason)

    # -- starting -----------------------------------------------------------
    def start(self):
        cfg = self.cfg
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop("SIGTERM"))
        self._watcher.start()
        # this process ends with os._exit: temp files go with its temp dir (TensorBoard's too)
        redirect_tempdir(os.path.join(cfg.temp_dir, "tmp"))
        port_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        port_sock.bind(("", 0))  # free on every address, held until release_port()
        port = port_sock.getsockname()[1]
        if cfg.fed:
            from .feed import FeedHub
            self.feed = FeedHub(cfg.temp_dir, cfg.secret_bytes, cfg.queues,
                                cfg.train_data_store, f"node {cfg.worker_num}")
            self.feed.on_replayed = self._replayed
            self.feed.start()
        # TensorBoard has no authentication: it serves only under a secret path
        tb_path = f"/sparkorca-{secrets.token_urlsafe(16)}" if cfg.tensorboard else ""
        tb_port = self._start_tensorboard(tb_path) if cfg.tensorboard else 0
        self.control = control.register(cfg, {
            "worker_num": cfg.worker_num, "job_name": cfg.job_name,
            "task_index": cfg.task_index, "host": cfg.host, "port": port, "tb_port": tb_port,
            "tb_path": tb_path,
            "executor_id": cfg.executor_id, "pid": os.getpid(),
            "socket": self.feed.socket_path if self.feed else None})
        reply = self.control.recv()
        if reply["type"] != "cluster":
            raise OrcaRuntimeError(f"the driver ended the reservation: {reply.get('why')}")
        control.serve(self.control, self._on_control, self.request_stop)
        return port, port_sock, reply["cluster_info"]

    def _start_tensorboard(self, path_prefix: str) -> int:
        """TensorBoard on the node address, on a port the kernel picks, under
        ``path_prefix``; its port once it serves."""
        log_dir = self.cfg.log_dir or os.path.join(self.cfg.temp_dir, "tensorboard")
        os.makedirs(log_dir, exist_ok=True)
        log_path = os.path.join(self.cfg.temp_dir, "tensorboard.log")
        self.tensorboard = Child("tensorboard", [
            sys.executable, "-m", "tensorboard.main", "--logdir", log_dir,
            "--host", self.cfg.host, "--port", "0", "--path_prefix", path_prefix],
            log_path=log_path)

        def serving():
            with open(log_path, errors="replace") as f:
                m = _TENSORBOARD_URL.search(f.read())
            return int(m.group(1)) if m else None
        return wait_for(serving, 120, "TensorBoard to serve", tail=self.tensorboard.tail,
                        failed=self.tensorboard.exited)

    def _replayed(self, feed_id: str, rows: int, error: Optional[str] = None) -> None:
        assert self.control is not None
        control.report(self.control, {"type": "replayed", "feed_id": feed_id, "rows": rows,
                                      "error": error})

    def _on_control(self, msg: dict) -> None:
        kind, feed = msg["type"], self.feed
        if feed is None:
            return
        if kind == "end":
            feed.end()
        elif kind == "flush":
            feed.flush(msg["qname"])
        elif kind == "replay":
            feed.replay(msg["qname"], msg["feed_id"], msg["epochs"], msg["feed_timeout"],
                        bool(msg.get("marks")))

    def run(self) -> None:
        from .node_context import NodeContext
        cfg = self.cfg
        try:
            port, port_sock, cluster_info = self.start()
        except BaseException as e:
            self.handoff.failed(f"{type(e).__name__}: {e}", traceback.format_exc())
            self.exit(1, f"start failed: {e}")
        assert self.control is not None
        os.environ["TF_CONFIG"] = rolemod.tf_config(cluster_info, cfg.job_name, cfg.task_index)
        os.environ.update(rolemod.torch_env(cluster_info, cfg.master_node, cfg.worker_num))
        ctx = NodeContext(cfg, port, cluster_info, self.feed, port_sock,
                          functools.partial(control.report, self.control))
        if cfg.release_port:
            ctx.release_port()
        self.handoff.ready({"port": port})
        try:
            result = self.map_fun(self.tf_args, ctx)
        except BaseException:
            try:
                tb = traceback.format_exc()
                sys.stderr.write(tb)
                control.report(self.control, {"type": "error", "traceback": tb})
                if self.feed is not None:
                    # a fed node stays until shutdown, as after a return, so that the
                    # Spark tasks feeding it (an inference() action has no driver
                    # watching) fail with this traceback, not "the node is not running"
                    self.feed.fail(tb)
                    self._watcher.join()  # it ends the process on stop or owner exit
            finally:
                self.exit(1, "map_fun raised")
        control.report(self.control, {"type": "done", "result": _json_or_none(result)})
        if self.feed is None:
            self.exit(0, "map_fun returned")
        else:
            self.feed.finished.set()  # feeders from now on hear "finished" until shutdown
        self._watcher.join()  # it ends the process on stop, shutdown or owner exit


def _json_or_none(result):
    """What map_fun returned, for the driver, if it is JSON (TFoS's map_funs return
    nothing; the Estimators' workers return their stats)."""
    try:
        json.dumps(result)
        return result
    except (TypeError, ValueError):
        log.info("map_fun's result (%s) is not JSON: the driver gets None",
                 type(result).__name__)
        return None


def _children():
    import psutil
    try:
        return [c.pid for c in psutil.Process().children()]
    except psutil.Error:
        return []


def main() -> None:
    config_json, payload = read_launch()
    handoff = Handoff()  # map_fun's prints go to stderr (the executor's log) from here
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import pickle
    map_fun, tf_args = pickle.loads(payload)  # cloudpickled by the driver
    Node(TFNodeConfig.from_json(config_json), map_fun, tf_args, handoff).run()


if __name__ == "__main__":
    main()
