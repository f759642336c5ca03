"""Spawned agents: each one an actor that owns one OS process, under a dynamic supervisor,
with a registry for spawns, the governor's caps, idempotency and crash recovery."""

from ._agent import AgentActor, AgentChanged, GetAnswer, GetRecord, ServerStopping, Stop, Touch
from ._errors import AgentCapReached, NotSpawnable
from ._logs import MAX_TAIL_LINES, RotatingLog, tail_lines
from ._policy import Caps, Governor, RestartPolicy
from ._procs import (
    ProcessIdentity,
    end_groups,
    group_alive,
    identity_of,
    is_own_group,
    signal_group,
)
from ._registry import (
    AgentRegistry,
    AgentStatus,
    ListAgentRecords,
    LogPath,
    Spawn,
    StopAgent,
    agent_child_id,
)
from ._spec import (
    LIVE_STATES,
    STATES,
    TERMINAL_STATES,
    AgentHooks,
    AgentsConfig,
    AgentSpec,
    path_segment,
    public_record,
)
from ._supervisor import AgentSupervisor
from ._wiring import server_hooks
from ._workspace import (
    MCP_CONFIG_FILE,
    MCP_ENV,
    MCP_SERVER_NAME,
    mcp_server_entry,
    write_mcp_config,
)

__all__ = [
    "MCP_CONFIG_FILE",
    "MCP_ENV",
    "MCP_SERVER_NAME",
    "LIVE_STATES",
    "MAX_TAIL_LINES",
    "STATES",
    "TERMINAL_STATES",
    "AgentActor",
    "AgentCapReached",
    "AgentChanged",
    "AgentHooks",
    "AgentRegistry",
    "AgentSpec",
    "AgentStatus",
    "AgentSupervisor",
    "AgentsConfig",
    "Caps",
    "GetAnswer",
    "GetRecord",
    "Governor",
    "ListAgentRecords",
    "LogPath",
    "NotSpawnable",
    "ProcessIdentity",
    "RestartPolicy",
    "RotatingLog",
    "ServerStopping",
    "Spawn",
    "Stop",
    "StopAgent",
    "Touch",
    "agent_child_id",
    "end_groups",
    "group_alive",
    "identity_of",
    "mcp_server_entry",
    "is_own_group",
    "path_segment",
    "public_record",
    "server_hooks",
    "signal_group",
    "tail_lines",
    "write_mcp_config",
]
