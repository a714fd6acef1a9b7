"""A real Spark standalone master and workers on this machine, bound to 127.0.0.1.

Used by ``init_orca_context(cluster_mode="standalone")`` without a master, and by
the test suite. Ports are chosen by the kernel (port 0) so that two programs get
two clusters; readiness is the master's and workers' own log lines; every
process is supervised and killed with its tree at stop.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import tempfile
from typing import List, Optional

from .._process import Child, search_file
from .._wait import wait_for
from .java import spark_class, spark_home

log = logging.getLogger(__name__)

_MASTER_URL_RE = re.compile(r"Starting Spark master at (spark://\S+)")
_REGISTERED = "Successfully registered with master"


class LocalStandaloneCluster:
    """Start with ``start()``, stop with ``stop()``; also a context manager.

    Examples
    --------
    >>> with LocalStandaloneCluster(num_workers=2, cores=1, memory_mb=1024) as c:  # doctest: +SKIP
    ...     print(c.master_url)
    spark://127.0.0.1:40123
    """

    def __init__(self, num_workers: int = 1, cores: int = 1, memory_mb: int = 1024,
                 host: str = "127.0.0.1", timeout: float = 120.0):
        self.num_workers = num_workers
        self.cores = cores
        self.memory_mb = memory_mb
        self.host = host
        self.timeout = timeout
        self.master_url: Optional[str] = None
        self.root: Optional[str] = None
        self.master: Optional[Child] = None
        self.workers: List[Child] = []

    def _env(self, root: str) -> dict:
        env = dict(os.environ)
        env.update({
            "SPARK_HOME": spark_home(),
            "SPARK_LOCAL_IP": self.host,
            # Executors put their block managers and shuffle files here, so one
            # rmtree at stop removes every temp file the cluster made.
            "SPARK_LOCAL_DIRS": os.path.join(root, "local"),
            "SPARK_WORKER_DIR": os.path.join(root, "work"),
            "SPARK_LOG_DIR": root,
        })
        env.pop("PYSPARK_GATEWAY_PORT", None)
        env.pop("PYSPARK_GATEWAY_SECRET", None)
        return env

    def start(self) -> "LocalStandaloneCluster":
        self.root = root = tempfile.mkdtemp(prefix="sparkorca-standalone-")
        try:
            self._start(root)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, root: str) -> None:
        env = self._env(root)
        os.makedirs(env["SPARK_LOCAL_DIRS"])
        os.makedirs(env["SPARK_WORKER_DIR"])
        master = self.master = Child(
            "spark master",
            [spark_class(), "org.apache.spark.deploy.master.Master",
             "--host", self.host, "--port", "0", "--webui-port", "0"],
            os.path.join(root, "master.log"), env=env)
        m = wait_for(lambda: search_file(master.log_path, _MASTER_URL_RE), self.timeout,
                     f"the Spark master on {self.host} to start", tail=master.tail,
                     failed=master.exited)
        assert m is not None
        self.master_url = master_url = m.group(1)
        for i in range(self.num_workers):
            self.workers.append(Child(
                f"spark worker {i}",
                [spark_class(), "org.apache.spark.deploy.worker.Worker",
                 "--host", self.host, "--port", "0", "--webui-port", "0",
                 "--cores", str(self.cores), "--memory", f"{self.memory_mb}m",
                 "--work-dir", env["SPARK_WORKER_DIR"], master_url],
                os.path.join(root, f"worker-{i}.log"), env=env))
        # Workers start concurrently; wait for each to register.
        for w in self.workers:
            wait_for(functools.partial(search_file, w.log_path, re.compile(_REGISTERED)),
                     self.timeout, f"{w.name} to register with {master_url}", tail=w.tail,
                     failed=w.exited)
        log.info("standalone cluster %s with %d worker(s) is up", self.master_url,
                 self.num_workers)

    def pids(self) -> List[int]:
        return [c.pid for c in [self.master, *self.workers] if c is not None]

    def stop(self) -> None:
        """Stop workers (and their executors) then the master; remove every file."""
        for w in self.workers:
            w.stop()
        if self.master is not None:
            self.master.stop()
        self.workers, self.master = [], None
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
