"""NodeConfig: what every node is told at launch, as a dataclass that travels as JSON.

A feature subclasses it with its own fields (RayNodeConfig, TFNodeConfig). The
driver builds it from its plan, the Spark task fills in who runs the node
(``placed``), the launcher writes it to the node's stdin, and the node reads it
back with ``from_json``: one direction, one type. Secrets travel only this way,
never in a command line or in Spark conf.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Type, TypeVar

from ..errors import OrcaRuntimeError

C = TypeVar("C", bound="NodeConfig")


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    cluster_id: str
    secret: str = ""             # hex; the control channel's shared secret
    hub_host: str = ""           # the driver's control server
    hub_port: int = 0
    ready_timeout: float = 60.0  # how long the node may take to become ready
    # Filled in where the node is launched (the Spark task, or the driver):
    name: str = ""               # the node's key in its cluster ("head", "3", ...)
    executor_id: str = ""
    host: str = ""
    owner_pid: int = 0           # the node stops when this process exits
    temp_dir: str = ""

    def placed(self: C, **where: Any) -> C:
        """A copy with the launch-site fields (name, executor_id, host, owner_pid, temp_dir)."""
        return dataclasses.replace(self, **where)

    @property
    def secret_bytes(self) -> bytes:
        return bytes.fromhex(self.secret)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls: Type[C], text: str) -> C:
        data: Dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:  # a driver and an executor of different sparkorca versions
            raise OrcaRuntimeError(f"{cls.__name__}: unknown fields {unknown} (a driver and "
                                   "an executor with different sparkorca versions?)")
        return cls(**data)
