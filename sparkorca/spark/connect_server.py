"""A real Spark Connect server on this machine, from the pyspark package's own jars.

For trying ``cluster_mode="spark-connect"`` without a cluster, and for the test
suite. It is bound to one address (127.0.0.1 by default), the port is chosen by
the kernel and read from the server's own start line, and a fresh pre-shared
token authenticates every client: the token goes to the server in its
environment (``SPARK_CONNECT_AUTHENTICATE_TOKEN``), never on its command line or
in Spark conf. The server and its executors are killed with their tree at stop.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import tempfile
from typing import Dict, Optional

from .._process import Child, search_file
from .._wait import wait_for
from .java import spark_home

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
TOKEN_ENV = "SPARK_CONNECT_AUTHENTICATE_TOKEN"  # read by the server and by pyspark's client
_STARTED_RE = re.compile(r"Spark Connect server started at: (\S+):(\d+)")
_APP_ID_RE = re.compile(r"Connected to Spark cluster with app ID (\S+)")
_REGISTERED_RE = re.compile(r"Registered executor .* with ID ")


def _local_cluster_executors(master: str) -> int:
    m = re.match(r"^local-cluster\[(\d+),", master)
    return int(m.group(1)) if m else 0


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class LocalConnectServer:
    """Start with ``start()``, stop with ``stop()``; also a context manager.

    ``remote`` is the URL clients connect to, and ``client_env()`` the environment
    a client process needs (the token). On 127.0.0.1 the URL names ``localhost``:
    pyspark sends a token over an unencrypted channel only to a local address.

    Examples
    --------
    >>> with LocalConnectServer("local-cluster[2,1,1024]") as server:  # doctest: +SKIP
    ...     os.environ.update(server.client_env())
    ...     init_orca_context(cluster_mode="spark-connect", master=server.remote)
    """

    def __init__(self, master: str = "local[2]", host: str = "127.0.0.1",
                 conf: Optional[Dict[str, str]] = None, timeout: float = 120.0):
        self.master = master
        self.host = host
        self.conf = dict(conf or {})
        self.timeout = timeout
        self.token = secrets.token_hex(32)
        self.port: Optional[int] = None
        self.root: Optional[str] = None
        self.server: Optional[Child] = None

    @property
    def remote(self) -> str:
        assert self.port is not None, "the server starts first"
        host = "localhost" if self.host == "127.0.0.1" else self.host
        return f"sc://{host}:{self.port}"

    def client_env(self) -> Dict[str, str]:
        return {TOKEN_ENV: self.token}

    def argv(self) -> list:
        conf = {"spark.connect.grpc.binding.address": self.host,
                "spark.connect.grpc.binding.port": "0",
                "spark.driver.host": self.host, "spark.driver.bindAddress": self.host,
                "spark.ui.enabled": "false",
                # the executors' Python: this one, which has sparkorca
                "spark.pyspark.python": sys.executable, **self.conf}
        argv = [os.path.join(spark_home(), "bin", "spark-submit"), "--class", SERVER_CLASS,
                "--master", self.master, "--name", "sparkorca Spark Connect server"]
        for key, value in conf.items():
            argv += ["--conf", f"{key}={value}"]
        return argv

    def start(self) -> "LocalConnectServer":
        self.root = root = tempfile.mkdtemp(prefix="sparkorca-connect-")
        env = {**os.environ, TOKEN_ENV: self.token, "SPARK_HOME": spark_home(),
               "PYSPARK_PYTHON": sys.executable,
               "SPARK_LOCAL_IP": self.host, "SPARK_LOCAL_DIRS": os.path.join(root, "local")}
        for name in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_REMOTE"):
            env.pop(name, None)
        try:
            server = self.server = Child("the Spark Connect server", self.argv(),
                                         os.path.join(root, "server.log"), env=env, cwd=root)
            m = wait_for(lambda: search_file(server.log_path, _STARTED_RE), self.timeout,
                         f"the Spark Connect server ({self.master}) to listen on {self.host}",
                         tail=server.tail, failed=server.exited)
            assert m is not None
            self.port = int(m.group(2))
            executors = _local_cluster_executors(self.master)
            if executors:  # ready means its executors are up too, as a cluster's would be
                wait_for(lambda: len(_REGISTERED_RE.findall(_read(server.log_path)))
                         >= executors, self.timeout,
                         f"the Spark Connect server's {executors} executors to register",
                         tail=server.tail, failed=server.exited)
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self) -> list:
        return [self.server.pid] if self.server is not None else []

    def stop(self) -> None:
        """Stop the server and its executors; remove every file."""
        if self.server is not None:
            app = search_file(self.server.log_path, _APP_ID_RE)
            self.server.stop()
            self.server = None
            if app and self.master.startswith("local-cluster"):
                # local-cluster's executors work in SPARK_HOME/work/<app id>
                shutil.rmtree(os.path.join(spark_home(), "work", app.group(1)),
                              ignore_errors=True)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


