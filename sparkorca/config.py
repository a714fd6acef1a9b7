"""The validated specification of a context, and the OrcaContext flags.

Everything the user passes to ``init_orca_context`` is checked here, once, before
any JVM or process starts, into a frozen ``ContextSpec`` (sizes in bytes, the
environment's defaults resolved). ``sparkorca.plan`` turns it into what a start
needs; nothing later looks at raw arguments again.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from typing import Any, Optional, Union

from . import _validate as check
from .errors import InvalidArgumentError, UnknownArgumentError

CLUSTER_MODES = (
    "local",
    "local-cluster",
    "standalone",
    "yarn-client",
    "yarn-cluster",
    "k8s-client",
    "k8s-cluster",
    "spark-submit",
    "spark-connect",
)
# Orca programs say "yarn" and "k8s" for the client modes (see the RayOnSpark guide).
MODE_ALIASES = {"yarn": "yarn-client", "k8s": "k8s-client"}
RUNTIMES = ("spark", "ray")

# Archive formats Spark's ``spark.archives`` can unpack on executors.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
PY_LIB_SUFFIXES = (".py", ".zip", ".egg")

_MEMORY_RE = re.compile(r"^([0-9]+)([kmgt])$", re.IGNORECASE)
_MEMORY_ACCEPTED = "a positive integer followed by k, m, g or t, such as '512m' or '2g'"
_UNIT_BYTES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

# Orca's defaults, kept so that ported programs size the same way.
DEFAULT_CLUSTER_CORES = 2
DEFAULT_DRIVER_CORES = 4
DEFAULT_DRIVER_MEMORY = "2g"


@dataclasses.dataclass(frozen=True)
class Memory:
    """An amount of memory: ``text`` as Spark writes it ("2g"), and its bytes."""

    text: str
    num_bytes: int

    @classmethod
    def parse(cls, name: str, value: Any) -> "Memory":
        """``value`` ("2g" style), or raise naming ``name``."""
        if not isinstance(value, str):
            raise InvalidArgumentError(name, value, _MEMORY_ACCEPTED)
        m = _MEMORY_RE.match(value.strip())
        if not m or int(m.group(1)) <= 0:
            raise InvalidArgumentError(name, value, _MEMORY_ACCEPTED)
        return cls(value.strip().lower(), int(m.group(1)) * _UNIT_BYTES[m.group(2).lower()])

    @property
    def mb(self) -> int:
        return self.num_bytes >> 20

    def __str__(self) -> str:
        return self.text


def parse_memory(name: str, value: Any) -> int:
    """``value`` ("2g" style) in bytes, or raise naming ``name``."""
    return Memory.parse(name, value).num_bytes


def format_memory_mb(num_bytes: int) -> str:
    """Bytes as Spark's "<n>m" form, rounded up to whole MiB."""
    return f"{-(-num_bytes // (1 << 20))}m"


def _optional_memory(name: str, value: Any) -> Optional[Memory]:
    return None if value is None else Memory.parse(name, value)


def _spark_value(v: Any) -> str:
    # Spark reads booleans as "true"/"false"; str(True) would be "True".
    return str(v).lower() if isinstance(v, bool) else str(v)


def _split_paths(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        return list(value)
    raise InvalidArgumentError(
        "extra_python_lib", value, "a comma-separated str or a list of paths")


def has_scheme(path: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path) is not None


def _python_libs(value: Any) -> tuple:
    libs = []
    for p in _split_paths(value):
        if not p.endswith(PY_LIB_SUFFIXES):
            raise InvalidArgumentError(
                "extra_python_lib", p, f"files ending in {', '.join(PY_LIB_SUFFIXES)}")
        if not has_scheme(p):
            if not os.path.isfile(p):
                raise InvalidArgumentError(
                    "extra_python_lib", p, "paths of existing files",
                    hint=f"{os.path.abspath(p)} does not exist")
            p = os.path.abspath(p)
        libs.append(p)
    return tuple(libs)


def _archive(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value.endswith(ARCHIVE_SUFFIXES):
        raise InvalidArgumentError(
            "penv_archive", value, f"a path ending in {', '.join(ARCHIVE_SUFFIXES)}")
    if has_scheme(value):
        return value
    if not os.path.isfile(value):
        raise InvalidArgumentError("penv_archive", value, "the path of an existing archive",
                                   hint=f"{os.path.abspath(value)} does not exist")
    return os.path.abspath(value)


def resolve_cluster_mode(value: Any) -> str:
    """Argument -> SPARKORCA_CLUSTER_MODE -> spark-submit if it launched us ->
    spark-connect if SPARK_REMOTE names a Connect server -> local."""
    if value is None:
        value = os.environ.get("SPARKORCA_CLUSTER_MODE")
    if value is None:
        # spark-submit hands its Python child the gateway of the JVM it started.
        if "PYSPARK_GATEWAY_PORT" in os.environ:
            return "spark-submit"
        return "spark-connect" if os.environ.get("SPARK_REMOTE") else "local"
    if not isinstance(value, str):
        raise InvalidArgumentError("cluster_mode", value, f"one of {', '.join(CLUSTER_MODES)}")
    mode = MODE_ALIASES.get(value.strip().lower(), value.strip().lower())
    if mode not in CLUSTER_MODES:
        raise InvalidArgumentError(
            "cluster_mode", value,
            f"one of {', '.join(CLUSTER_MODES)} (or the aliases 'yarn', 'k8s')")
    return mode


@dataclasses.dataclass(frozen=True)
class ContextSpec:
    """Everything init_orca_context was asked for, validated and normalised."""

    cluster_mode: str = "local"
    runtime: str = "spark"
    cores: Optional[int] = None
    memory: Memory = Memory("2g", 2 << 30)
    num_nodes: int = 1
    init_ray_on_spark: bool = False
    master: Optional[str] = None
    driver_cores: int = DEFAULT_DRIVER_CORES
    driver_memory: Memory = Memory(DEFAULT_DRIVER_MEMORY, 2 << 30)
    extra_python_lib: tuple = ()
    conf: dict = dataclasses.field(default_factory=dict)
    env: dict = dataclasses.field(default_factory=dict)
    container_image: Optional[str] = None
    penv_archive: Optional[str] = None
    python_location: Optional[str] = None
    hadoop_conf: Optional[str] = None  # HADOOP_CONF_DIR resolved for YARN modes
    hadoop_user_name: Optional[str] = None
    extra_executor_memory_for_ray: Optional[Memory] = None
    spark_log_level: Optional[str] = None
    # Orca's option: True (or a file path) sends the driver's Spark log to a file and
    # keeps only its errors on the console.
    redirect_spark_log: Union[bool, str] = False
    # Ray options; the RayOnSpark launcher reads them.
    object_store_memory: Optional[Memory] = None
    num_ray_nodes: Optional[int] = None
    ray_node_cpu_cores: Optional[int] = None
    include_webui: bool = False
    extra_params: dict = dataclasses.field(default_factory=dict)
    system_config: dict = dataclasses.field(default_factory=dict)
    address: Optional[str] = None

    @property
    def is_local(self) -> bool:
        return self.cluster_mode in ("local", "local-cluster")

    @property
    def is_cluster_deploy(self) -> bool:
        """The driver itself runs on the cluster: the script is resubmitted."""
        return self.cluster_mode in ("yarn-cluster", "k8s-cluster")

    @property
    def executor_cores(self) -> int:
        if self.cores is not None:
            return self.cores
        return 1 if self.cluster_mode == "local-cluster" else DEFAULT_CLUSTER_CORES


# The keyword arguments init_orca_context takes besides its named parameters.
KWARG_NAMES = tuple(
    f.name for f in dataclasses.fields(ContextSpec)
    if f.name not in ("cluster_mode", "runtime", "cores", "memory", "num_nodes",
                      "init_ray_on_spark"))
SPARK_LOG_LEVELS = ("ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN")


def _log_redirect(value) -> Union[bool, str]:
    if isinstance(value, bool) or (isinstance(value, str) and value.strip()):
        return value
    raise InvalidArgumentError("redirect_spark_log", value,
                               "True, False or the path of the log file to write")


def build_spec(cluster_mode=None, runtime="spark", cores=None, memory="2g", num_nodes=1,
               init_ray_on_spark=False, **kwargs) -> ContextSpec:
    """Validate init_orca_context's arguments into a ContextSpec.

    Raises before anything starts, naming the parameter, the bad value and what
    is accepted (every requirement the cluster manager has that is not met).
    """
    unknown = sorted(set(kwargs) - set(KWARG_NAMES))
    if unknown:
        raise UnknownArgumentError(
            f"init_orca_context got unknown argument(s) {', '.join(unknown)}; "
            f"accepted keyword arguments are {', '.join(sorted(KWARG_NAMES))}")
    get = kwargs.get
    mode = resolve_cluster_mode(cluster_mode)
    check.one_of("runtime", runtime, RUNTIMES)
    for name in ("master", "container_image", "python_location", "hadoop_user_name",
                 "address", "hadoop_conf"):
        check.non_empty_str(name, get(name))
    log_level = get("spark_log_level")
    if log_level is not None:
        log_level = check.one_of("spark_log_level", str(log_level).upper(), SPARK_LOG_LEVELS)
    hadoop_conf = get("hadoop_conf")
    if mode.startswith("yarn") and hadoop_conf is None:
        hadoop_conf = os.environ.get("HADOOP_CONF_DIR")
    spec = ContextSpec(
        cluster_mode=mode, runtime=runtime,
        cores=check.integer("cores", cores, allow_none=True),
        memory=Memory.parse("memory", memory),
        num_nodes=check.integer("num_nodes", num_nodes),
        init_ray_on_spark=check.boolean("init_ray_on_spark", init_ray_on_spark),
        master=get("master") if get("master") is not None or mode != "spark-connect"
        else os.environ.get("SPARK_REMOTE"),
        driver_cores=check.integer("driver_cores", get("driver_cores", DEFAULT_DRIVER_CORES)),
        driver_memory=Memory.parse("driver_memory", get("driver_memory", DEFAULT_DRIVER_MEMORY)),
        extra_python_lib=_python_libs(get("extra_python_lib")),
        conf={k: _spark_value(v) for k, v in check.str_dict("conf", get("conf")).items()},
        env={k: str(v) for k, v in check.str_dict("env", get("env")).items()},
        container_image=get("container_image"),
        penv_archive=_archive(get("penv_archive")),
        python_location=get("python_location"),
        hadoop_conf=hadoop_conf,
        hadoop_user_name=get("hadoop_user_name"),
        extra_executor_memory_for_ray=_optional_memory(
            "extra_executor_memory_for_ray", get("extra_executor_memory_for_ray")),
        spark_log_level=log_level,
        redirect_spark_log=_log_redirect(get("redirect_spark_log", False)),
        object_store_memory=_optional_memory("object_store_memory", get("object_store_memory")),
        num_ray_nodes=check.integer("num_ray_nodes", get("num_ray_nodes"), allow_none=True),
        ray_node_cpu_cores=check.integer("ray_node_cpu_cores", get("ray_node_cpu_cores"),
                                         allow_none=True),
        include_webui=check.boolean("include_webui", get("include_webui", False)),
        extra_params=check.str_dict("extra_params", get("extra_params")),
        system_config=check.str_dict("system_config", get("system_config")),
        address=get("address"),
    )
    from .spark.managers import manager_for
    errors = manager_for(mode).problems(spec)
    if errors:
        raise InvalidArgumentError.all_of(errors)
    return spec


@dataclasses.dataclass(frozen=True)
class FlagValues:
    """The OrcaContext flags at one moment: what a start, a read or a cluster uses."""

    log_output: bool = False
    barrier_mode: bool = True
    serialize_data_creator: bool = False
    pandas_read_backend: str = "spark"
    train_data_store: str = "DRAM"
    shard_size: Optional[int] = None
    # Orca's _eager_mode: every new XShards is computed and cached at once (its parent
    # uncached unless the program cached it), so errors surface at the call.
    eager_mode: bool = False


class Flags:
    """The OrcaContext flags, each validated (and normalised, as Orca did: case of
    "Pandas", "disk_2") when it is set."""

    _STORE_RE = re.compile(r"^DISK_([1-9][0-9]*)$")

    def __init__(self) -> None:
        self._values = dataclasses.asdict(FlagValues())

    def reset(self) -> None:
        self._values = dataclasses.asdict(FlagValues())

    def get(self, name: str) -> Any:
        return self._values[name]

    def snapshot(self) -> FlagValues:
        return FlagValues(**self._values)

    def set(self, name: str, value: Any, context_running: bool = False) -> None:
        self._values[name] = self.validate(name, value)
        if name == "log_output" and context_running:
            warnings.warn("OrcaContext.log_output takes effect at the next init_orca_context; "
                          "the running context keeps its output settings", stacklevel=3)

    def validate(self, name: str, value: Any) -> Any:
        label = f"OrcaContext.{name}"
        if name in ("log_output", "barrier_mode", "serialize_data_creator", "eager_mode"):
            return check.boolean(label, value)
        if name == "pandas_read_backend":
            if isinstance(value, str) and value.lower() in ("spark", "pandas"):
                return value.lower()
            raise InvalidArgumentError(label, value, "'spark' or 'pandas'")
        if name == "train_data_store":
            if isinstance(value, str) and (value.upper() == "DRAM"
                                           or self._STORE_RE.match(value.upper())):
                return value.upper()
            raise InvalidArgumentError(
                label, value, "'DRAM' or 'DISK_n' with n a positive integer, such as 'DISK_2'")
        if name == "shard_size":
            return check.integer(label, value, allow_none=True)
        raise AttributeError(name)
