"""The validated specification of a context, and the OrcaContext flags.

Everything the user passes to ``init_orca_context`` is checked here, once, before
any JVM or process starts. Later stages (conf rendering, launching) read the
frozen ``ContextSpec`` and never look at raw arguments again.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import warnings
from typing import Any, Mapping, Optional

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


def parse_memory(name: str, value: Any) -> int:
    """Return ``value`` ("2g" style) in bytes, or raise naming ``name``."""
    if not isinstance(value, str):
        raise InvalidArgumentError(name, value, _MEMORY_ACCEPTED)
    m = _MEMORY_RE.match(value.strip())
    if not m or int(m.group(1)) <= 0:
        raise InvalidArgumentError(name, value, _MEMORY_ACCEPTED)
    return int(m.group(1)) * _UNIT_BYTES[m.group(2).lower()]


def format_memory_mb(num_bytes: int) -> str:
    """Bytes as Spark's "<n>m" form, rounded up to whole MiB."""
    return f"{-(-num_bytes // (1 << 20))}m"


def _positive_int(name: str, value: Any, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        accepted = "a positive integer" + (" or None" if allow_none else "")
        raise InvalidArgumentError(name, value, accepted)
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(name, value, "True or False")
    return value


def _str_dict(name: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidArgumentError(name, value, "a dict with str keys")
    return dict(value)


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


def _has_scheme(path: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path) is not None


def _python_libs(value: Any) -> tuple:
    libs = []
    for p in _split_paths(value):
        if not p.endswith(PY_LIB_SUFFIXES):
            raise InvalidArgumentError(
                "extra_python_lib", p, f"files ending in {', '.join(PY_LIB_SUFFIXES)}")
        if not _has_scheme(p):
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
    if _has_scheme(value):
        return value
    if not os.path.isfile(value):
        raise InvalidArgumentError("penv_archive", value, "the path of an existing archive",
                                   hint=f"{os.path.abspath(value)} does not exist")
    return os.path.abspath(value)


def node_ip() -> str:
    """The address other machines reach this one at, for binding services.

    A UDP connect sends nothing; it only asks the kernel which interface routes
    outwards. Without a route (an offline laptop) the hostname's address is used.
    """
    env = os.environ.get("SPARKORCA_NODE_IP")
    if env:
        return env
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
            return s.getsockname()[0]
        except OSError:
            pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def resolve_cluster_mode(value: Any) -> str:
    """Argument -> SPARKORCA_CLUSTER_MODE -> spark-submit if it launched us -> local."""
    if value is None:
        value = os.environ.get("SPARKORCA_CLUSTER_MODE")
    if value is None:
        # spark-submit hands its Python child the gateway of the JVM it started.
        return "spark-submit" if "PYSPARK_GATEWAY_PORT" in os.environ else "local"
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
    memory: str = "2g"
    num_nodes: int = 1
    init_ray_on_spark: bool = False
    master: Optional[str] = None
    driver_cores: int = DEFAULT_DRIVER_CORES
    driver_memory: str = DEFAULT_DRIVER_MEMORY
    extra_python_lib: tuple = ()
    conf: dict = dataclasses.field(default_factory=dict)
    env: dict = dataclasses.field(default_factory=dict)
    container_image: Optional[str] = None
    penv_archive: Optional[str] = None
    python_location: Optional[str] = None
    hadoop_conf: Optional[str] = None
    hadoop_user_name: Optional[str] = None
    extra_executor_memory_for_ray: Optional[str] = None
    # Ray options; the RayOnSpark launcher reads them.
    object_store_memory: Optional[str] = None
    num_ray_nodes: Optional[int] = None
    ray_node_cpu_cores: Optional[int] = None
    include_webui: bool = False
    extra_params: dict = dataclasses.field(default_factory=dict)
    system_config: dict = dataclasses.field(default_factory=dict)
    address: Optional[str] = None
    # Resolved, not given: where the driver's services bind.
    driver_host: str = "127.0.0.1"

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

    def replace(self, **changes) -> "ContextSpec":
        return dataclasses.replace(self, **changes)


# The keyword arguments init_orca_context takes besides its named parameters.
KWARG_NAMES = tuple(
    f.name for f in dataclasses.fields(ContextSpec)
    if f.name not in ("cluster_mode", "runtime", "cores", "memory", "num_nodes",
                      "init_ray_on_spark", "driver_host"))


def build_spec(cluster_mode=None, runtime="spark", cores=None, memory="2g", num_nodes=1,
               init_ray_on_spark=False, **kwargs) -> ContextSpec:
    """Validate init_orca_context's arguments into a ContextSpec.

    Raises before anything starts, naming the parameter, the bad value and what
    is accepted.
    """
    unknown = sorted(set(kwargs) - set(KWARG_NAMES))
    if unknown:
        raise UnknownArgumentError(
            f"init_orca_context got unknown argument(s) {', '.join(unknown)}; "
            f"accepted keyword arguments are {', '.join(sorted(KWARG_NAMES))}")

    mode = resolve_cluster_mode(cluster_mode)
    if runtime not in RUNTIMES:
        raise InvalidArgumentError("runtime", runtime, f"one of {', '.join(RUNTIMES)}")
    cores = _positive_int("cores", cores, allow_none=True)
    parse_memory("memory", memory)
    num_nodes = _positive_int("num_nodes", num_nodes)
    init_ray_on_spark = _bool("init_ray_on_spark", init_ray_on_spark)

    driver_cores = _positive_int("driver_cores", kwargs.get("driver_cores", DEFAULT_DRIVER_CORES))
    driver_memory = kwargs.get("driver_memory", DEFAULT_DRIVER_MEMORY)
    parse_memory("driver_memory", driver_memory)
    for name in ("extra_executor_memory_for_ray", "object_store_memory"):
        if kwargs.get(name) is not None:
            parse_memory(name, kwargs[name])
    for name in ("num_ray_nodes", "ray_node_cpu_cores"):
        _positive_int(name, kwargs.get(name), allow_none=True)
    include_webui = _bool("include_webui", kwargs.get("include_webui", False))
    for name in ("master", "container_image", "python_location", "hadoop_user_name",
                 "address", "hadoop_conf"):
        v = kwargs.get(name)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise InvalidArgumentError(name, v, "a non-empty str or None")

    conf = {k: _spark_value(v) for k, v in _str_dict("conf", kwargs.get("conf")).items()}
    env = {k: str(v) for k, v in _str_dict("env", kwargs.get("env")).items()}

    spec = ContextSpec(
        cluster_mode=mode, runtime=runtime, cores=cores, memory=memory.strip().lower(),
        num_nodes=num_nodes, init_ray_on_spark=init_ray_on_spark,
        master=kwargs.get("master"), driver_cores=driver_cores,
        driver_memory=driver_memory.strip().lower(),
        extra_python_lib=_python_libs(kwargs.get("extra_python_lib")),
        conf=conf, env=env,
        container_image=kwargs.get("container_image"),
        penv_archive=_archive(kwargs.get("penv_archive")),
        python_location=kwargs.get("python_location"),
        hadoop_conf=kwargs.get("hadoop_conf"),
        hadoop_user_name=kwargs.get("hadoop_user_name"),
        extra_executor_memory_for_ray=kwargs.get("extra_executor_memory_for_ray"),
        object_store_memory=kwargs.get("object_store_memory"),
        num_ray_nodes=kwargs.get("num_ray_nodes"),
        ray_node_cpu_cores=kwargs.get("ray_node_cpu_cores"),
        include_webui=include_webui,
        extra_params=_str_dict("extra_params", kwargs.get("extra_params")),
        system_config=_str_dict("system_config", kwargs.get("system_config")),
        address=kwargs.get("address"),
    )
    if mode.startswith("yarn") and spec.hadoop_conf is None:
        spec = spec.replace(hadoop_conf=os.environ.get("HADOOP_CONF_DIR"))
    _check_mode_requirements(spec)
    if _driver_is_remote_reachable(spec):
        spec = spec.replace(driver_host=node_ip())
    return spec


def _driver_is_remote_reachable(spec: ContextSpec) -> bool:
    """Whether executors on other machines must call back to the driver."""
    mode = spec.cluster_mode
    if mode.startswith(("yarn", "k8s")):
        return True
    if mode == "standalone" and spec.master:
        host = spec.master[len("spark://"):].split(",")[0].rsplit(":", 1)[0]
        return host not in ("127.0.0.1", "localhost")
    return False


def _check_mode_requirements(spec: ContextSpec) -> None:
    mode, master = spec.cluster_mode, spec.master
    if mode == "local" and master is not None and not master.startswith("local"):
        raise InvalidArgumentError(
            "master", master, "None or a local master such as 'local[4]', 'local[*]' or "
            "'local-cluster[2,1,1024]' when cluster_mode='local'")
    if mode == "local-cluster" and master is not None:
        raise InvalidArgumentError(
            "master", master, "None when cluster_mode='local-cluster'",
            hint="the master is built from num_nodes, cores and memory")
    if mode == "standalone" and master is not None and not master.startswith("spark://"):
        raise InvalidArgumentError(
            "master", master, "None (start a cluster on this machine) or 'spark://host:port'")
    if mode.startswith("yarn"):
        if master not in (None, "yarn"):
            raise InvalidArgumentError("master", master, "None or 'yarn' for YARN modes")
        hadoop_conf = spec.hadoop_conf
        if not hadoop_conf:
            raise InvalidArgumentError(
                "hadoop_conf", None, "the Hadoop configuration directory for YARN modes",
                hint="pass hadoop_conf='/etc/hadoop/conf' or set HADOOP_CONF_DIR")
        if not os.path.isdir(hadoop_conf):
            raise InvalidArgumentError("hadoop_conf", hadoop_conf, "an existing directory")
    if mode.startswith("k8s"):
        if not master or not master.startswith("k8s://"):
            raise InvalidArgumentError(
                "master", master, "the API server as 'k8s://https://<host>:<port>' for K8s "
                "modes", hint="e.g. master='k8s://https://127.0.0.1:6443'")
        if not spec.container_image:
            raise InvalidArgumentError(
                "container_image", None, "a Spark image with Python for K8s modes",
                hint="e.g. container_image='apache/spark-py:v4.0.0'")


class Flags:
    """The OrcaContext flags, each validated when it is set."""

    _BACKENDS = ("spark", "pandas")
    _STORE_RE = re.compile(r"^DISK_([1-9][0-9]*)$")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._values = {
            "log_output": False,
            "barrier_mode": True,
            "serialize_data_creator": False,
            "pandas_read_backend": "spark",
            "train_data_store": "DRAM",
            "shard_size": None,
        }

    def get(self, name: str) -> Any:
        return self._values[name]

    def set(self, name: str, value: Any, context_running: bool = False) -> None:
        self._values[name] = self.validate(name, value)
        if name == "log_output" and context_running:
            warnings.warn("OrcaContext.log_output takes effect at the next init_orca_context; "
                          "the running context keeps its output settings", stacklevel=3)

    def validate(self, name: str, value: Any) -> Any:
        if name in ("log_output", "barrier_mode", "serialize_data_creator"):
            return _bool(f"OrcaContext.{name}", value)
        if name == "pandas_read_backend":
            if value not in self._BACKENDS:
                raise InvalidArgumentError(f"OrcaContext.{name}", value,
                                           "'spark' or 'pandas'")
            return value
        if name == "train_data_store":
            if value == "DRAM" or (isinstance(value, str) and self._STORE_RE.match(value)):
                return value
            raise InvalidArgumentError(
                f"OrcaContext.{name}", value,
                "'DRAM' or 'DISK_n' with n a positive integer, such as 'DISK_2'")
        if name == "shard_size":
            return _positive_int(f"OrcaContext.{name}", value, allow_none=True)
        raise AttributeError(name)
