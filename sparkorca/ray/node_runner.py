"""Supervisor of one Ray node (head or raylet): ``python -m sparkorca.ray.node_runner``.

It reads its RayNodeConfig from the launcher (so the auth token is in neither a
command line nor Spark conf), runs ``ray start --block`` in a process group of its
own, and answers READY once Ray has written the cluster's address into the node's
temp dir (``ray start`` does that last, after every process is up). It registers
with the driver's hub and keeps the node alive until one of:

- its owner process exits (the executor JVM for a raylet, the driver for the
  head), watched through a pidfd, so no polling;
- its launching task ends before it sent DETACH (a barrier stage that lost a peer;
  a barrier task detaches once the driver, which sees every raylet register, sent
  "release": Spark's own BarrierTaskContext.barrier() takes a second per call);
- the driver says stop, or its control connection drops (the driver died);
- SIGTERM (or its parent dying: PR_SET_PDEATHSIG);
- the Ray node itself exits: then it tells the driver why, with Ray's log tails.

Then it stops the node's whole process group (Ray's own SIGTERM handling leaves
gcs_server/raylet behind), kills any straggler descendant, and removes the temp
dir (sessions, sockets, logs, spilled objects). Imports only the standard library,
psutil and the node layer: it must start fast inside a Spark task.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
from typing import Optional

import psutil

from .._process import become_subreaper, die_with_parent, reap_descendants, tail_file
from .._wait import wait_for
from ..errors import OrcaRuntimeError, StartupTimeoutError
from ..node import control
from ..node.handoff import Handoff, read_launch, released_early, wait_until_released
from .node import RUNNER_PID_ENV, RayNodeConfig, ray_start_argv, write_join_file

ADDRESS_FILE = "ray_current_cluster"  # written by `ray start` once the node is up


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """Stop the node's processes: SIGTERM, then SIGKILL what is left, and wait.

    The node is ``ray start``'s tree and process group; once ``ray start`` itself
    has died its children are no longer its descendants, so the group is searched
    too. Only a worker node's raylet is worth waiting for (up to ``grace``
    seconds): on SIGTERM it unregisters from the GCS, so the node shows as dead at
    once. gcs_server and ``ray start --block`` ignore SIGTERM in practice, and a
    head's raylet has no one left to tell, so the head uses no grace at all.
    """
    tree = _group(proc.pid)
    _signal_all(proc.pid, tree, signal.SIGTERM)
    if grace > 0:
        psutil.wait_procs([p for p in tree if _name(p) == "raylet"], timeout=grace)
    tree = list({p.pid: p for p in tree + _group(proc.pid)}.values())
    _signal_all(proc.pid, tree, signal.SIGKILL)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    if not reap_descendants(10):  # the runner is their subreaper: orphans come here
        psutil.wait_procs(tree, timeout=10)


def _group(pgid: int) -> list:
    """``pgid``'s descendants and every process of its process group."""
    found = {}
    try:
        root = psutil.Process(pgid)
        found = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter():
        try:
            if p.pid not in found and os.getpgid(p.pid) == pgid:
                found[p.pid] = p
        except (OSError, psutil.Error):
            pass
    return list(found.values())


def remove_dir(path: str) -> None:
    """Remove ``path``; a process that was just killed may still have had a file
    in flight, so try again until it is gone (bounded)."""
    def removed() -> bool:
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.exists(path)
    try:
        wait_for(removed, 10, f"{path} to be removed")
    except (OrcaRuntimeError, StartupTimeoutError):
        pass


class StartWatch:
    """Why ``ray start`` will not bring the node up, as soon as that is known.

    ``ray start`` keeps retrying a GCS or raylet that died under it for a long
    time; a core process it started and that is gone again means the start failed.
    """

    CORE = ("gcs_server", "raylet")

    def __init__(self, proc: subprocess.Popen, owner_pid: Optional[int] = None):
        self.proc = proc
        self.owner_pid = owner_pid
        self.seen: dict = {}  # pid -> (name, process)

    def failure(self) -> Optional[str]:
        if self.proc.poll() is not None:
            return f"ray start exited with code {self.proc.returncode}"
        if self.owner_pid is not None:
            # e.g. a raylet job cancelled by stop while ray start still waits for a GCS
            why = released_early(self.owner_pid)
            if why:
                return why
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                name = _name(child)
                if name in self.CORE:
                    self.seen.setdefault(child.pid, (name, child))
        except psutil.Error:
            return None  # ray start is exiting: poll() says why next time
        for name, child in self.seen.values():
            try:
                gone = child.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                gone = True
            if gone:
                return f"{name} (pid {child.pid}) exited"
        return None


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


def _signal_all(pgid: int, tree, sig) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    for p in tree:  # descendants that left the group (setsid) still get the signal
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def _read_address(temp_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(temp_dir, ADDRESS_FILE)) as f:
            text = f.read().strip()
    except OSError:
        return None
    return text if ":" in text else None  # ray writes the file in two steps


def log_tails(temp_dir: str, start_log: str) -> str:
    """``ray start``'s output, then the tail of every Ray error log that has text."""
    parts = [tail_file(start_log, 60)]
    for path in sorted(glob.glob(os.path.join(temp_dir, "session_latest", "logs", "*.err"))):
        if os.path.getsize(path):
            parts.append(f"--- {os.path.basename(path)} ---\n{tail_file(path, 15)}")
    return "\n".join(parts)


class Runner:
    def __init__(self, cfg: RayNodeConfig, handoff: Handoff):
        self.cfg = cfg
        self.handoff = handoff
        self.start_log = os.path.join(cfg.temp_dir, "ray-start.log")
        self.stop_read, self.stop_write = os.pipe()
        self.proc: Optional[subprocess.Popen] = None

    def request_stop(self, reason: str) -> None:
        try:
            os.write(self.stop_write, reason.encode()[:200] or b"x")
        except OSError:
            pass

    def _start(self) -> str:
        """Start the node; its GCS address once it is up."""
        cfg = self.cfg
        options = dict(cfg.options, temp_dir=cfg.temp_dir)
        env = {**os.environ, **cfg.env, RUNNER_PID_ENV: str(os.getpid())}
        with open(self.start_log, "ab") as log:
            self.proc = subprocess.Popen(ray_start_argv(options), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True,
                                         preexec_fn=die_with_parent)
        return wait_for(lambda: _read_address(cfg.temp_dir) or "", cfg.ready_timeout,
                        "ray start to bring the node up",
                        failed=StartWatch(self.proc, cfg.owner_pid).failure)

    def run(self) -> int:
        cfg = self.cfg
        become_subreaper()
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop("SIGTERM"))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        channel = None
        try:
            if not psutil.pid_exists(cfg.owner_pid):
                raise OrcaRuntimeError(f"owner process {cfg.owner_pid} is gone")
            gcs_address = self._start()
            channel = control.register(cfg, {
                "executor_id": cfg.executor_id, "executor_pid": cfg.owner_pid, "host": cfg.host,
                "runner_pid": os.getpid(),
                "node_name": cfg.options.get("node_name"), "temp_dir": cfg.temp_dir,
                "gcs_address": gcs_address})
        except (OrcaRuntimeError, StartupTimeoutError, OSError, ConnectionError) as e:
            self.handoff.failed(str(e), log_tails(cfg.temp_dir, self.start_log))
            self._end()
            return 1
        if cfg.advertise:
            write_join_file(cfg, gcs_address)
        self.handoff.ready({"gcs_address": gcs_address, "runner_pid": os.getpid()})
        control.serve(channel, on_message=self._on_message, on_stop=self.request_stop)
        assert self.proc is not None
        node_fd = os.pidfd_open(self.proc.pid)
        reason = wait_until_released(cfg.owner_pid, {node_fd: "the Ray node exited",
                                                     self.stop_read: "stop"})
        if reason == "the Ray node exited":
            tails = log_tails(cfg.temp_dir, self.start_log)
            control.report(channel, {"type": "exited", "why": "the Ray node exited on its own "
                                     f"(code {self.proc.poll()})", "tail": tails})
            self.handoff.exited("the Ray node exited on its own", tails)
        self._end()
        channel.close()
        return 0

    def _on_message(self, msg: dict) -> None:
        if msg.get("type") == "release":  # every raylet of the start is up
            self.handoff.released()

    def _end(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, self.cfg.stop_grace)
        remove_dir(self.cfg.temp_dir)


def main() -> int:
    config_json, _ = read_launch()
    handoff = Handoff()
    return Runner(RayNodeConfig.from_json(config_json), handoff).run()


if __name__ == "__main__":
    sys.exit(main())
