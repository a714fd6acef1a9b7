"""A context's plan: the spec plus what was resolved for this start (the master
URL, the environment archive, the driver's address, the flags at init).

Built once, after the resources it names exist (a local standalone cluster, a
packed environment); the Spark conf is rendered from it and every component
started from it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from .config import ContextSpec, FlagValues
from .node.host import node_ip
from .spark.managers import LOOPBACK, ClusterManager, manager_for


@dataclasses.dataclass(frozen=True)
class Plan:
    spec: ContextSpec
    flags: FlagValues
    master: str
    penv_archive: Optional[str]  # what executors unpack as their Python, if anything
    driver_host: str             # where the driver's services bind

    @property
    def manager(self) -> ClusterManager:
        return manager_for(self.spec.cluster_mode)

    @property
    def python_exec(self) -> str:
        return self.manager.python_exec(self.spec, self.penv_archive)


def make_plan(spec: ContextSpec, flags: FlagValues, master: Optional[str] = None,
              penv_archive: Optional[str] = None) -> Plan:
    """``master`` and ``penv_archive`` override the spec's (a started local cluster's
    URL, an archive just packed)."""
    manager = manager_for(spec.cluster_mode)
    return Plan(spec=spec, flags=flags, master=master or manager.master(spec),
                penv_archive=penv_archive or spec.penv_archive,
                driver_host=node_ip() if manager.driver_reachable(spec) else LOOPBACK)
