"""Create, adopt and fully stop the SparkContext of a context.

We launch pyspark's gateway JVM ourselves so that (a) its output passes through
an ``OutputPump`` (tail for errors, stdout for log_output), (b) its environment
carries the bind address, and (c) stop can end the JVM: pyspark keeps the
gateway alive after ``SparkContext.stop()``, which would leave a java process
behind every context.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
from typing import Optional

from .._environ import temporary_environ
from ..errors import InvalidArgumentError, OrcaRuntimeError
from .conf import SparkLaunch
from .logs import OutputPump

log = logging.getLogger(__name__)


class OwnedSpark:
    """A SparkContext this process started, with the JVM and output pump behind it."""

    def __init__(self, sc, pump: Optional[OutputPump]):
        self.sc = sc
        self.pump = pump

    @property
    def gateway_pid(self) -> Optional[int]:
        proc = getattr(self.sc._gateway, "proc", None)
        return proc.pid if proc is not None else None

    def stop(self, timeout: float = 30.0) -> None:
        if self.sc is not None:
            stop_session_and_context(self.sc)
        end_gateway(timeout=timeout)
        if self.pump is not None:
            self.pump.join()


def end_gateway(gateway=None, timeout: float = 30.0) -> None:
    """Shut the py4j gateway and end the JVM behind it; reset pyspark's globals."""
    from pyspark import SparkContext
    gateway = gateway or SparkContext._gateway
    SparkContext._gateway = None
    SparkContext._jvm = None
    SparkContext._active_spark_context = None
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    try:
        gateway.shutdown()
    except Exception as e:  # the JVM may already be gone
        log.debug("gateway shutdown: %s", e)
    if proc is None:
        return
    # The gateway JVM exits when its stdin closes; its shutdown hooks then remove
    # Spark's temp dirs, which a kill would skip. Kill only if it hangs.
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        log.warning("Spark driver JVM (pid %d) did not exit in %gs; killing it",
                    proc.pid, timeout)
    proc.kill()
    proc.wait(timeout)


def stop_session_and_context(sc) -> None:
    from pyspark.sql import SparkSession
    # pyspark's accumulator server serves the JVM's connection from one thread that
    # looks at its stop flag once a second, and sc.stop() waits for it (0.5-1 s of
    # a stop). It is needed until the JVM's SparkContext has stopped (tasks ending
    # meanwhile still send updates), not after: it ends in the background then.
    server = getattr(sc, "_accumulatorServer", None)
    sc._accumulatorServer = None
    try:
        session = SparkSession._instantiatedSession
        if session is not None:
            session.stop()
        sc.stop()
    finally:
        if server is not None:
            server.server_shutdown = True
            # the JVM's exit ends its connection: an EOF the handler need not report
            server.handle_error = lambda request, client_address: None
            threading.Thread(target=server.shutdown, name="sparkorca-accumulator-stop",
                             daemon=True).start()
            if isinstance(server.server_address, str):  # a unix socket's file: gone now,
                with contextlib.suppress(OSError):      # even if the process ends first
                    os.unlink(server.server_address)


def start_spark(launch: SparkLaunch, log_output: bool,
                log_file: Optional[str] = None) -> OwnedSpark:
    """Launch the driver JVM for ``launch`` and return the new SparkContext; its log
    goes to ``log_file`` (errors still on the console) when given."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    conf = SparkConf(loadDefaults=False).setMaster(launch.master)
    conf.setAll(list(launch.conf.items()))
    if log_file:
        # the console is for errors then; a progress bar would only be noise there
        conf.setIfMissing("spark.ui.showConsoleProgress", "false")
    try:
        pump = OutputPump("spark-driver", to_stdout=log_output, log_file=log_file)
    except OSError as e:
        raise InvalidArgumentError("redirect_spark_log", log_file,
                                   "a file this process can write", hint=str(e)) from None
    try:
        with temporary_environ({**launch.driver_env, "PYSPARK_SUBMIT_ARGS": "pyspark-shell"}):
            gateway = launch_gateway(conf, popen_kwargs={
                "stdout": pump.write_fd, "stderr": pump.write_fd})
    except Exception as e:
        pump.join()
        raise OrcaRuntimeError(
            f"the Spark driver JVM failed to start for master {launch.master}: {e}\n"
            f"--- last output ---\n{pump.tail()}") from e
    finally:
        pump.close_write_end()
    try:
        sc = SparkContext(conf=conf, gateway=gateway, pyFiles=list(launch.py_files))
    except Exception as e:
        # Format first: a py4j error asks the JVM for its text, so the JVM must be up.
        what = _describe(e)
        end_gateway(gateway)
        pump.join()
        raise OrcaRuntimeError(
            f"creating the SparkContext for master {launch.master} failed: {what}\n"
            f"--- last output ---\n{pump.tail()}") from e
    # The Python executors run; pyspark would otherwise take "python3" from PATH.
    sc.pythonExec = launch.python_exec
    return OwnedSpark(sc, pump)


def _describe(e: Exception) -> str:
    try:
        return str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    except Exception:
        return repr(e)


def registered_executors(sc) -> int:
    """Executors registered with the driver right now (the driver not counted)."""
    return sc._jsc.sc().getExecutorIds().size()


MISSING_ON_EXECUTORS = ("No module named 'sparkorca'", 'No module named "sparkorca"')


def job_error_text(error: BaseException, markers=("Traceback (most recent call last)",),
                   limit: int = 4000) -> str:
    """The useful part of a failed Spark job's error: from the first of ``markers``
    (the Python traceback Spark carried back from the executor, by default) up to
    the JVM stack; else the error's tail. When the executors' Python could not even
    import sparkorca, that comes first, with the fix."""
    text = str(error)
    cause = ""
    if any(m in text for m in MISSING_ON_EXECUTORS):
        cause = ("The executors' Python cannot import sparkorca (ModuleNotFoundError: No "
                 "module named 'sparkorca'): they run a different Python than this driver. "
                 "Point PYSPARK_PYTHON (or spark.pyspark.python) at a Python that has "
                 "sparkorca installed, or start Spark with init_orca_context(...), which runs "
                 "the executors on this driver's Python or ships its environment.\n")
    for marker in markers:
        if marker in text:
            return cause + text[text.index(marker):].split("\n\tat ")[0].strip()[:limit]
    return cause + text.strip()[-limit:]


def expected_executors(sc) -> Optional[int]:
    """How many executors the application asked for, where that is known."""
    import re
    match = re.match(r"local-cluster\[\s*(\d+)\s*,", sc.master)
    if match:
        return int(match.group(1))
    instances = sc.getConf().get("spark.executor.instances")
    return int(instances) if instances else None


def is_local_master(sc) -> bool:
    """local / local[N]: the driver is the only executor (local-cluster has real ones)."""
    return sc.master == "local" or sc.master.startswith("local[")


def wait_for_executors(sc, need: int, timeout: float, purpose: str) -> None:
    """Block until ``need`` executors have registered, or as many as the application
    asked for if that is fewer (none on local masters)."""
    from .._wait import wait_for
    if is_local_master(sc):
        return
    expected = expected_executors(sc)
    need = min(need, expected) if expected else need
    wait_for(lambda: registered_executors(sc) >= need, timeout,
             f"{need} Spark executor(s) to register with the driver before {purpose}",
             tail=lambda: f"registered so far: {registered_executors(sc)}")


def active_spark_context():
    from pyspark import SparkContext
    return SparkContext._active_spark_context


def adopt_spark_submit_context():
    """The context of the JVM spark-submit started for this program."""
    from pyspark import SparkContext
    return SparkContext.getOrCreate()
