"""One TFCluster node: ``python -m sparkorca.cluster.node``, launched by a Spark task
(or by the driver for ``driver_ps_nodes``).

Stdin brings a length-prefixed JSON configuration and the cloudpickled
``(map_fun, tf_args)`` (so the cluster secret is in neither a command line nor
Spark conf). The node reserves its port, starts its feed socket and TensorBoard,
registers with the driver over the authenticated control channel, and once the
driver has sent the whole cluster it sets TF_CONFIG and the torch.distributed
variables, answers READY, and runs ``map_fun(tf_args, ctx)``.

It stops, killing what it started and removing its temp dir, when: its owner
exits (the executor JVM, or the driver); its launching task ends before
detaching; the driver says stop or goes away; SIGTERM; or map_fun ends (at once
in InputMode.TENSORFLOW and for ps/evaluator nodes; at shutdown for fed nodes,
which keep answering feeders that they are finished until then).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback

from .._process import FAILED, READY, RunningNode, kill_tree, wait_until_released
from ..errors import OrcaRuntimeError
from . import roles as rolemod
from .channel import connect_tcp

log = logging.getLogger("sparkorca.cluster.node")
TEMP_PREFIX = "sparkorca-tf-"
_HEADER = struct.Struct("!Q")


def node_dir(cluster_id: str, worker_num: int) -> str:
    return os.path.join("/tmp", f"{TEMP_PREFIX}{cluster_id}-{worker_num}")


def launch(cfg: dict, payload: bytes, env: dict, what: str) -> RunningNode:
    """Start a node process for ``cfg``; call ``sparkorca._process.wait_ready`` next."""
    directory = cfg["node_dir"]
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        raise OrcaRuntimeError(f"{what}: {directory} exists already; is a second node with "
                               "this number being started?") from None
    data = json.dumps({**cfg, "payload_len": len(payload)}).encode()
    proc = subprocess.Popen([sys.executable, "-m", "sparkorca.cluster.node"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, **env}, start_new_session=True)
    proc.stdin.write(_HEADER.pack(len(data)) + data + payload)
    proc.stdin.flush()
    return RunningNode(proc, directory, what, cfg["reservation_timeout"])


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("stdin closed before the node's configuration was read")
        buf += chunk
    return bytes(buf)


class Node:
    def __init__(self, cfg: dict, map_fun, tf_args, status):
        self.cfg = cfg
        self.map_fun = map_fun
        self.tf_args = tf_args
        self.status = status
        self.secret = bytes.fromhex(cfg["secret"])
        self.dir = cfg["node_dir"]
        self.fed = (cfg["input_mode"] == rolemod.InputMode.SPARK
                    and cfg["job_name"] not in rolemod.HELD_ROLES)
        self.hub = None
        self.control = None
        self.tensorboard = None
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
            return
        log.info("node %s stops: %s", self.cfg["worker_num"], reason)
        try:
            if self.hub is not None:
                self.hub.close()
            for child in _children():
                kill_tree(child, timeout=5)
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.cfg["serialize_data_creator"]:
                try:
                    os.remove(self.cfg["lock_path"])
                except OSError:
                    pass
            if self.control is not None:
                self.control.close()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _watch(self) -> None:
        reason = wait_until_released(self.cfg["owner_pid"], {self._stop_read: "stop"})
        if reason == "stop":
            reason = os.read(self._stop_read, 200).decode(errors="replace") or "asked to stop"
        self.exit(1, reason)

    # -- starting -----------------------------------------------------------
    def start(self):
        cfg = self.cfg
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop("SIGTERM"))
        self._watcher.start()
        port_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        port_sock.bind(("", 0))  # free on every address, held until release_port()
        port = port_sock.getsockname()[1]
        if self.fed:
            from .feed import FeedHub
            self.hub = FeedHub(self.dir, self.secret, cfg["queues"], cfg["train_data_store"],
                               f"node {cfg['worker_num']}")
            self.hub.on_replayed = self._replayed
            self.hub.start()
        tb_port = self._start_tensorboard() if cfg["tensorboard_here"] else 0
        self.control = connect_tcp(cfg["driver_host"], cfg["driver_port"], self.secret)
        self.control.send({"type": "register", "worker_num": cfg["worker_num"],
                           "job_name": cfg["job_name"], "task_index": cfg["task_index"],
                           "host": cfg["host"], "port": port, "tb_port": tb_port,
                           "executor_id": cfg["executor_id"], "pid": os.getpid(),
                           "socket": self.hub.socket_path if self.hub else None})
        reply = self.control.recv()
        if reply["type"] != "cluster":
            raise OrcaRuntimeError(f"the driver ended the reservation: {reply.get('why')}")
        threading.Thread(target=self._control_loop, name="sparkorca-node-control",
                         daemon=True).start()
        return port, port_sock, reply["cluster_info"]

    def _start_tensorboard(self) -> int:
        from .._process import Child
        from ..ray.launch import free_ports
        port = free_ports(1)[0]
        log_dir = self.cfg["log_dir"] or os.path.join(self.dir, "tensorboard")
        os.makedirs(log_dir, exist_ok=True)
        self.tensorboard = Child("tensorboard", [
            sys.executable, "-m", "tensorboard.main", "--logdir", log_dir,
            "--host", self.cfg["host"], "--port", str(port)],
            log_path=os.path.join(self.dir, "tensorboard.log"))
        return port

    def _replayed(self, feed_id: str, rows: int, error: str = None) -> None:
        self.control.send({"type": "replayed", "feed_id": feed_id, "rows": rows, "error": error})

    def _control_loop(self) -> None:
        while True:
            try:
                msg = self.control.recv()
            except (OSError, ConnectionError, ValueError):
                self.request_stop("the driver went away")
                return
            kind = msg["type"]
            if kind == "stop":
                self.request_stop("the driver asked the node to stop")
                return
            if kind == "end" and self.hub is not None:
                self.hub.end()
            elif kind == "flush" and self.hub is not None:
                self.hub.flush(msg["qname"])
            elif kind == "replay" and self.hub is not None:
                self.hub.replay(msg["qname"], msg["feed_id"], msg["epochs"], msg["feed_timeout"])

    def run(self) -> None:
        from .node_context import NodeContext
        cfg = self.cfg
        try:
            port, port_sock, cluster_info = self.start()
        except BaseException as e:
            self.status.write(f"{FAILED} " + json.dumps({"why": f"{type(e).__name__}: {e}",
                                                          "tail": traceback.format_exc()}) + "\n")
            self.status.flush()
            self.exit(1, f"start failed: {e}")
        os.environ["TF_CONFIG"] = rolemod.tf_config(cluster_info, cfg["job_name"], cfg["task_index"])
        os.environ.update(rolemod.torch_env(cluster_info, cfg["master_node"], cfg["worker_num"]))
        ctx = NodeContext({**cfg, "port": port}, cluster_info, self.hub, port_sock)
        if cfg["release_port"]:
            ctx.release_port()
        self.status.write(f"{READY}\n")
        self.status.close()
        try:
            self.map_fun(self.tf_args, ctx)
        except BaseException:
            tb = traceback.format_exc()
            sys.stderr.write(tb)
            self._report({"type": "error", "traceback": tb})
            self.exit(1, "map_fun raised")
        self._report({"type": "done"})
        if self.hub is None:
            self.exit(0, "map_fun returned")
        self.hub.finished.set()  # feeders from now on hear "finished" until shutdown
        self._watcher.join()  # it ends the process on stop, shutdown or owner exit

    def _report(self, msg: dict) -> None:
        try:
            self.control.send(msg)
        except (OSError, ConnectionError):
            pass


def _children():
    import psutil
    try:
        return [c.pid for c in psutil.Process().children()]
    except psutil.Error:
        return []


def main() -> None:
    (n,) = _HEADER.unpack(_read_exact(0, _HEADER.size))
    cfg = json.loads(_read_exact(0, n))
    payload = _read_exact(0, cfg.pop("payload_len"))
    # The launcher reads READY/FAILED on our stdout; map_fun's prints go to stderr
    # (the executor's log) so they can never be mistaken for it.
    status = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import pickle
    map_fun, tf_args = pickle.loads(payload)  # cloudpickled by the driver
    Node(cfg, map_fun, tf_args, status).run()


if __name__ == "__main__":
    main()
