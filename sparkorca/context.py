"""init_orca_context / stop_orca_context, and OrcaContext.

Data flow, one direction: arguments -> ContextSpec (validated once, nothing
started yet) -> the resources this start needs (a local standalone cluster, a
packed environment) -> Plan (master, archive, driver address, flags at init) ->
components started in order, each registering its stop on one ExitStack, so
stop (and a failed start) undo them in reverse: Ray's raylets, then Spark, then
the Ray head, the log sink, the scratch dir, the standalone cluster, the reaper.

Features talk to the running context through a small internal API: ``current()``,
``flags()`` and ``on_stop()``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import inspect
import logging
import os
import shutil
import sys
import tempfile
import threading
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from .config import ContextSpec, Flags, FlagValues, build_spec
from .errors import NoContextError, UnknownFlagError
from .plan import Plan, make_plan

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger(__name__)

_flags = Flags()
_lock = threading.RLock()


@dataclasses.dataclass
class _Running:
    spec: ContextSpec
    sc: Optional[SparkContext]
    stack: contextlib.ExitStack
    plan: Optional[Plan] = None
    adopted: bool = False
    ray: Any = None  # sparkorca.ray.OrcaRayContext, once Ray is started
    standalone: object = None  # the local standalone cluster this context started
    session: Any = None  # cluster_mode="spark-connect": the Connect SparkSession (no sc)

    @property
    def result(self) -> Any:
        """What init_orca_context returns: the SparkContext, the Connect session, or
        for runtime="ray" the Ray context."""
        if self.session is not None:
            return self.session
        return self.ray if self.sc is None else self.sc


_running: Optional[_Running] = None


# -- the internal API features use ------------------------------------------
def current() -> Optional[_Running]:
    """The running context's record, or None."""
    return _running


running_context = current  # the name earlier code used


def refuse_over_connect(api: str, instead: str) -> None:
    """Raise, before anything starts, when ``api`` (built on RDDs) is called in a
    cluster_mode='spark-connect' context; ``instead`` says what to use there."""
    if _running is not None and _running.session is not None:
        raise NoContextError(f"{api} runs RDD jobs from a SparkContext, which "
                             f"cluster_mode='spark-connect' does not have: {instead}")


def flags() -> FlagValues:
    """The OrcaContext flags as they are now."""
    return _flags.snapshot()


def on_stop(callback: Callable[[], None], sc=None) -> bool:
    """Run ``callback`` when the running context stops (before what started before
    it); only if its SparkContext (or Connect session) is ``sc`` when given. Whether
    it was registered.

    A bound method is held weakly: an object the program has let go of (a TFCluster
    shut down long ago) is not kept alive until the context stops.
    """
    with _lock:
        if _running is None or (sc is not None and sc not in (_running.sc, _running.session)):
            return False
        if inspect.ismethod(callback):
            method = weakref.WeakMethod(callback)
            _running.stack.callback(lambda: (method() or (lambda: None))())
        else:
            _running.stack.callback(callback)
        return True


def init_orca_context(cluster_mode=None, runtime="spark", cores=None, memory="2g", num_nodes=1,
                      init_ray_on_spark=False, **kwargs):
    """Start Spark on ``cluster_mode`` and return its SparkContext.

    Parameters
    ----------
    cluster_mode : str, optional
        "local" (default), "local-cluster", "standalone", "yarn-client", "yarn-cluster",
        "k8s-client", "k8s-cluster" or "spark-submit". None reads
        SPARKORCA_CLUSTER_MODE, then picks "spark-submit" when spark-submit launched
        this program, else "local".
    runtime : str
        "spark" (the default) or "ray".
    cores : int, optional
        Cores per executor; for "local", all cores when None.
    memory : str
        Memory per executor, "2g" style.
    num_nodes : int
        Number of executors (workers for a local standalone cluster).
    init_ray_on_spark : bool
        Also start a Ray cluster inside the Spark application.
    **kwargs
        driver_cores, driver_memory, extra_python_lib, conf, env, master,
        container_image, penv_archive, python_location, hadoop_conf,
        hadoop_user_name, extra_executor_memory_for_ray, spark_log_level,
        redirect_spark_log and the Ray options. Any other name is an error.

    Examples
    --------
    >>> from sparkorca import init_orca_context, stop_orca_context
    >>> sc = init_orca_context(cluster_mode="local", cores=2, memory="2g")  # doctest: +SKIP
    >>> sc.parallelize(range(10)).sum()                                      # doctest: +SKIP
    45
    >>> stop_orca_context()                                                  # doctest: +SKIP
    """
    global _running
    spec = build_spec(cluster_mode, runtime, cores, memory, num_nodes, init_ray_on_spark,
                      **kwargs)
    with _lock:
        if (_running is not None and _running.sc is None and _running.session is None
                and not _running.ray.initialized):
            # runtime="ray" whose Ray the program stopped: nothing runs, start afresh
            _running.stack.close()
            _running = None
        if _running is not None:
            warnings.warn("init_orca_context: a context is already running; returning it "
                          "unchanged (call stop_orca_context() first to start a different "
                          "one)", stacklevel=2)
            return _running.result
        stack = contextlib.ExitStack()
        try:
            if spec.runtime == "ray":
                _running = _start_ray_only(spec, stack)
            elif spec.cluster_mode == "spark-connect":
                _running = _start_connect(spec, stack)
            else:
                _running = _start(spec, flags(), stack)
        except BaseException:
            stack.close()
            raise
        return _running.result


def _start_ray_only(spec: ContextSpec, stack: contextlib.ExitStack) -> _Running:
    running = _Running(spec=spec, sc=None, stack=stack)
    _start_ray_on(running)
    return running


def _start_connect(spec: ContextSpec, stack: contextlib.ExitStack) -> _Running:
    """A thin client of a Spark Connect server: its session, and RayOnSpark on the
    server's executors with the head on this machine."""
    from .spark.connect import connect_session
    session = connect_session(spec)
    stack.callback(session.stop)
    running = _Running(spec=spec, sc=None, stack=stack, session=session)
    if spec.init_ray_on_spark:
        _start_ray_on(running)
    return running


def _ray_on_spark(spec: ContextSpec, master: str, conf: dict, flag_values: FlagValues,
                  driver_host: str, over_connect: bool = False):
    """RayOnSpark sized against the Spark application; raises before anything waits."""
    from .ray.cluster import RayOnSpark
    from .ray.sizing import plan_ray, spark_capacity
    capacity = spark_capacity(master, conf)
    if over_connect:  # the server's local executor is not this machine: a raylet there
        capacity = dataclasses.replace(capacity, local=False)
    plan = plan_ray(spec, capacity, barrier=flag_values.barrier_mode,
                    driver_memory=conf.get("spark.driver.memory"))
    return RayOnSpark(spec, plan, hub_host=conf.get("spark.driver.host", driver_host))


def _start_ray_on(running: _Running) -> None:
    """Start Ray for a running context: RayOnSpark on its Spark (adopted, or lazily on
    demand), or the local Ray of runtime="ray"; again on the same OrcaRayContext after
    the program stopped it."""
    from .ray import OrcaRayContext
    sc = running.sc
    backend: Any
    if running.session is not None:
        from .node.host import node_ip
        from .spark.connect import server_conf
        conf = server_conf(running.session)
        backend = _ray_on_spark(running.spec, conf["spark.master"], conf, flags(), node_ip(),
                                over_connect=True)
        sc = running.session  # the raylets start from its DataFrame jobs
    elif sc is None:
        from .ray.local import LocalRay
        backend = LocalRay(running.spec)
    else:
        assert sc.master is not None
        backend = _ray_on_spark(running.spec, sc.master, dict(sc.getConf().getAll()), flags(),
                                running.plan.driver_host if running.plan else "127.0.0.1")
    running.stack.callback(backend.stop)
    try:
        if sc is None:
            backend.start()
        else:
            backend.start_head()
            backend.attach(sc)
    except BaseException:
        backend.stop()  # nothing half-started stays connected: a later start is clean
        raise
    if isinstance(running.ray, OrcaRayContext):
        running.ray._started(backend)
    else:
        running.ray = OrcaRayContext(backend)
    _start_data_holders(running.ray)


def _start_data_holders(ray_context) -> None:
    """Ray on Spark's data holders start with it, not waited for: a Spark -> Ray
    transfer would otherwise wait for a process start on every executor's node,
    whose raylet keeps no idle workers (see sparkorca.data.to_ray). On a local
    master the one node keeps the idle workers Ray starts for the driver, and the
    first transfer's holder takes one; a Ray of runtime="ray" has no Spark tasks."""
    if ray_context.runtime == "spark" and not ray_context.is_local:
        from .data.to_ray import node_holders
        node_holders(ray_context)


def _start(spec: ContextSpec, flag_values: FlagValues, stack: contextlib.ExitStack) -> _Running:
    from .spark import session, submit
    existing = session.active_spark_context()
    if existing is not None:
        warnings.warn(
            f"init_orca_context: adopting the SparkContext already running in this process "
            f"(master {existing.master}); its configuration is kept and the arguments given "
            "here are not applied. stop_orca_context() will leave it running.", stacklevel=4)
        running = _Running(spec=spec, sc=existing, stack=stack, adopted=True)
    elif spec.cluster_mode == "spark-submit" or (spec.is_cluster_deploy
                                                 and submit.running_resubmitted()):
        running = _adopt_submitted(spec, stack)
    else:
        from .spark.java import check_java
        java = check_java()
        if spec.is_cluster_deploy:
            _resubmit_and_exit(spec, flag_values)
        return _start_owned(spec, flag_values, stack, java)
    if spec.init_ray_on_spark:
        _start_ray_on(running)
    return running


def _start_owned(spec: ContextSpec, flag_values: FlagValues, stack: contextlib.ExitStack,
                 java: Tuple[str, str]) -> _Running:
    from ._environ import temporary_environ
    from ._reaper import Reaper
    from .spark import needs_packed_env, session
    from .spark.class_data import plan_for_launch
    from .spark.conf import render_launch
    from .spark.java import spark_home
    from .spark.logs import LogSink, log_daemon_source, set_driver_log_level
    from .spark.pyenv import cache_dir, pack_environment
    from .spark.standalone import LocalStandaloneCluster

    ray_cluster = None
    if spec.init_ray_on_spark:  # sized against what Spark will have: pure, before any start
        sketch = make_plan(spec, flag_values)
        ray_cluster = _ray_on_spark(spec, sketch.master, render_launch(sketch).conf,
                                    flag_values, sketch.driver_host)

    reaper = Reaper()  # removes what the steps below leave if this process is killed
    stack.callback(reaper.close)
    master = standalone = None
    if spec.cluster_mode == "standalone" and spec.master is None:
        standalone = LocalStandaloneCluster(num_workers=spec.num_nodes,
                                            cores=spec.executor_cores, memory_mb=spec.memory.mb)
        stack.callback(standalone.stop)
        standalone.start()
        assert standalone.root is not None
        reaper.remove_on_crash(standalone.root)
        for pid in standalone.pids():
            reaper.wait_for_on_crash(pid)
        master = standalone.master_url
    archive = pack_environment() if needs_packed_env(spec) else None
    plan = make_plan(spec, flag_values, master=master, penv_archive=archive)
    launch = render_launch(plan)
    for class_data in plan_for_launch(launch.master, launch.conf, *java,
                                      os.path.join(cache_dir(), "cds")):
        launch = class_data.applied_to(launch)
        stack.callback(class_data.publish)  # after the JVMs have exited (owned.stop, below)

    driver_env = dict(launch.driver_env)
    if spec.is_local:
        # Local modes write scratch files (block managers, shuffle) into a dir of
        # ours, removed at stop. The env var, unlike spark.local.dir, does not make
        # Spark warn on every start.
        scratch = tempfile.mkdtemp(prefix="sparkorca-driver-")
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        reaper.remove_on_crash(scratch)
        driver_env["SPARK_LOCAL_DIRS"] = scratch
    sink = None
    if "spark.python.daemon.module" in launch.conf:
        sink = LogSink(plan.driver_host)
        stack.callback(sink.stop)
    stack.enter_context(temporary_environ(spec.env))
    app_work_dirs: list = []
    stack.callback(_remove_app_work_dirs, app_work_dirs)  # runs after Spark has stopped
    if ray_cluster is not None:
        ray_cluster.start_head()  # comes up while the Spark driver JVM starts
        stack.callback(ray_cluster.stop_head)
    log_file = spec.redirect_spark_log
    if log_file is True:
        log_file = "sparkorca-spark.log"  # in the working directory, as Orca's bigdl.log
    owned = session.start_spark(dataclasses.replace(launch, driver_env=driver_env),
                                flag_values.log_output,
                                os.path.abspath(log_file) if log_file else None)
    stack.callback(owned.stop)
    sc = owned.sc
    gateway_pid = owned.gateway_pid
    if gateway_pid is not None:
        reaper.wait_for_on_crash(gateway_pid)
    if spec.spark_log_level or log_file:
        # redirected: the file gets INFO unless asked otherwise (the console only errors)
        set_driver_log_level(sc, spec.spark_log_level or "INFO")
    if launch.master.startswith("local-cluster"):
        # local-cluster's in-JVM workers ignore SPARK_WORKER_DIR: executors work in
        # SPARK_HOME/work/<application id>, which nothing else would remove.
        app_work_dirs.append(os.path.join(spark_home(), "work", sc.applicationId))
        reaper.remove_on_crash(app_work_dirs[-1])
    if sink is not None:
        sc.addFile(log_daemon_source())
        # Sent to executors inside each task, never through Spark conf.
        sc.environment.update(sink.worker_env())
    running = _Running(spec=spec, sc=sc, stack=stack, plan=plan, standalone=standalone)
    if ray_cluster is not None:
        from .ray import OrcaRayContext
        # The raylets are told to stop before Spark stops and stop meanwhile;
        # stop_head (after Spark) waits for them.
        stack.callback(ray_cluster.stop_raylets, wait=False)
        ray_cluster.attach(sc)
        running.ray = OrcaRayContext(ray_cluster)
        _start_data_holders(running.ray)
    return running


def _remove_app_work_dirs(dirs: list) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(d))  # the work dir itself, if we were its only user


def _adopt_submitted(spec: ContextSpec, stack: contextlib.ExitStack) -> _Running:
    from .spark import session
    from .spark.logs import set_driver_log_level
    ignored = [name for name in ("conf", "env", "extra_python_lib", "penv_archive", "master",
                                 "redirect_spark_log")  # spark-submit owns the JVM's output
               if getattr(spec, name)]
    if ignored or spec.cores is not None:
        warnings.warn(
            f"cluster_mode='{spec.cluster_mode}': spark-submit already configured this "
            f"application; ignoring {', '.join(ignored + (['cores'] if spec.cores else []))} "
            "(pass them to spark-submit instead)", stacklevel=5)
    sc = session.adopt_spark_submit_context()
    stack.callback(session.stop_session_and_context, sc)
    if spec.spark_log_level:
        set_driver_log_level(sc, spec.spark_log_level)
    return _Running(spec=spec, sc=sc, stack=stack)


def _resubmit_and_exit(spec: ContextSpec, flag_values: FlagValues) -> None:
    from .spark import needs_packed_env
    from .spark.conf import render_launch
    from .spark.pyenv import pack_environment
    from .spark.submit import main_script, resubmit
    script = main_script()
    archive = pack_environment() if needs_packed_env(spec) else None
    code = resubmit(render_launch(make_plan(spec, flag_values, penv_archive=archive)), script,
                    sys.argv[1:])
    # The program ran on the cluster; this process only reports how it ended.
    raise SystemExit(code)


def stop_orca_context() -> None:
    """Stop everything init_orca_context started. Calling it twice is harmless.

    Examples
    --------
    >>> stop_orca_context()  # doctest: +SKIP
    """
    global _running
    with _lock:
        running, _running = _running, None
        if running is None:
            return
        if running.adopted:
            log.info("leaving the adopted SparkContext running (Ray, if started, stops)")
        try:
            running.stack.close()
        finally:
            if running.ray is not None:
                running.ray._ended()  # a program's handle says so: initialized is False


@contextlib.contextmanager
def orca_context(*args, **kwargs):
    """``with orca_context(...) as sc:`` runs init_orca_context and always stops it.

    Examples
    --------
    >>> with orca_context(cluster_mode="local", cores=1) as sc:  # doctest: +SKIP
    ...     sc.parallelize([1, 2]).count()
    2
    """
    sc = init_orca_context(*args, **kwargs)
    try:
        yield sc
    finally:
        stop_orca_context()


atexit.register(stop_orca_context)


def _flag(name: str):
    def get(cls):
        return _flags.get(name)

    def set_(cls, value):
        _flags.set(name, value, context_running=_running is not None)

    return property(get, set_, doc=f"OrcaContext.{name} flag")


class _OrcaContextMeta(type):
    # Properties on the metaclass validate ``OrcaContext.flag = value`` assignments.
    log_output = _flag("log_output")
    barrier_mode = _flag("barrier_mode")
    serialize_data_creator = _flag("serialize_data_creator")
    pandas_read_backend = _flag("pandas_read_backend")
    train_data_store = _flag("train_data_store")
    shard_size = _flag("shard_size")
    _shard_size = _flag("shard_size")  # Orca's own programs spell it this way
    eager_mode = _flag("eager_mode")
    _eager_mode = _flag("eager_mode")  # Orca's spelling

    def __setattr__(cls, name, value):
        # A misspelt flag must not be a silent no-op: only flags and existing names.
        if not hasattr(cls, name):
            flags = sorted(n for n, v in vars(_OrcaContextMeta).items()
                           if isinstance(v, property))
            raise UnknownFlagError(f"OrcaContext has no flag {name!r}; the flags are "
                                   f"{', '.join(flags)}")
        super().__setattr__(name, value)


class OrcaContext(metaclass=_OrcaContextMeta):
    """The flags of sparkorca and the getters of the running context.

    Flags (validated on assignment): ``log_output``, ``barrier_mode``,
    ``serialize_data_creator``, ``pandas_read_backend`` ("spark" | "pandas"),
    ``train_data_store`` ("DRAM" | "DISK_n"), ``shard_size`` (None or rows),
    ``eager_mode`` (compute and cache every new XShards at once). Orca's spellings
    ``_shard_size`` and ``_eager_mode`` are the same flags.

    Examples
    --------
    >>> OrcaContext.train_data_store = "DISK_2"
    >>> OrcaContext.train_data_store
    'DISK_2'
    >>> OrcaContext.train_data_store = "DRAM"
    """

    @staticmethod
    def get_spark_context():
        """The running context's SparkContext."""
        running = _require_running()
        if running.session is not None:
            raise NoContextError(
                "cluster_mode='spark-connect' has no SparkContext: this program is a thin "
                "client of a Spark Connect server; use OrcaContext.get_spark_session() and "
                "DataFrame APIs")
        if running.sc is None:
            raise NoContextError("this context runs runtime='ray' and has no Spark; start "
                                 "it with runtime='spark' to use Spark")
        return running.sc

    @staticmethod
    def get_spark_session():
        """A SparkSession on the running context's SparkContext."""
        from pyspark.sql import SparkSession
        running = _require_running()
        if running.session is not None:
            return running.session
        return SparkSession.builder.getOrCreate()

    @staticmethod
    def get_sql_context():
        """Orca's getter: an SQLContext on the running context (Spark deprecated the class
        in 3.0; the SparkSession of get_spark_session() does all it does)."""
        from pyspark.sql import SQLContext
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the deprecation, said above
            return SQLContext.getOrCreate(OrcaContext.get_spark_context())

    @staticmethod
    def get_ray_context():
        """The Ray context of the running context, started on demand (as Orca did)
        when the context was created without init_ray_on_spark=True."""
        with _lock:
            running = _require_running()
            if running.ray is None or not running.ray.is_initialized:
                _start_ray_on(running)
            return running.ray

    @staticmethod
    def reset_flags() -> None:
        """Put every flag back to its default."""
        _flags.reset()


def _require_running() -> _Running:
    if _running is None:
        raise NoContextError("no sparkorca context is running; start one with "
                             "init_orca_context(cluster_mode='local', cores=2)")
    return _running
