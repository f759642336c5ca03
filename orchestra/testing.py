"""The fault-injection harness and its pytest plugin (``orchestra.transport.testing*``;
docs/testing.md): import the harness from here. Installing orchestra-sidecar registers the
fixtures as the pytest plugin ``orchestra`` (entry point ``pytest11``, the module
``orchestra.transport.testing_plugin``, which imports the server only when a fixture is used)."""

from orchestra.transport.testing import (
    FAULT_POINTS,
    FaultRefused,
    Faults,
    FaultSchedule,
    FaultStep,
    InProcessServer,
    ServerHandle,
    ServerProcess,
)
from orchestra.transport.testing_invariants import (
    Invariants,
    InvariantViolation,
    Ledger,
    SubscriberLog,
    orchestra_tasks,
)
from orchestra.transport.testing_load import TICK, Load, SoakFigures, sigkill_soak
from orchestra.transport.testing_plugin import (
    orchestra_invariants,
    orchestra_ledger,
    orchestra_process,
    orchestra_schedule,
    orchestra_seed,
    orchestra_server,
    pytest_addoption,
    pytest_runtest_makereport,
)

__all__ = [
    "FAULT_POINTS",
    "FaultRefused",
    "FaultSchedule",
    "FaultStep",
    "Faults",
    "InProcessServer",
    "InvariantViolation",
    "Invariants",
    "Ledger",
    "Load",
    "ServerHandle",
    "ServerProcess",
    "SoakFigures",
    "SubscriberLog",
    "TICK",
    "orchestra_invariants",
    "orchestra_ledger",
    "orchestra_process",
    "orchestra_schedule",
    "orchestra_seed",
    "orchestra_server",
    "orchestra_tasks",
    "pytest_addoption",
    "pytest_runtest_makereport",
    "sigkill_soak",
]
