"""Every fault the local stack knows, in one table: the drill (`--fault`), the chaos matrix,
the seeded soak and the tests read it; `local.drill.backends` implements each entry (a test
checks that every entry has an implementation).

Adding a fault is one entry here and one primitive in `local.drill.backends` (made of the
stack's actions, `local.fault_actions`).

Each entry says what it does, in the words of what it stands for on EKS, which supervised
units it may restart (a restart of any other unit is a bystander wrongly restarted), on which
node a Serve replica must be replaced before the stack counts as healthy again, and whether
the Kubernetes backend can do it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from local.state import REDIS_UNIT
from local.topology import HEAD, WORKERS

# The worker the worker faults act on (the other one keeps serving).
FAULTED_WORKER = WORKERS[-1]


@dataclass(frozen=True)
class FaultKind:
    name: str
    summary: str
    # Units the fault may restart: the supervisor's records (nodes, "redis").
    may_restart: tuple[str, ...] = ()
    # A Serve replica on this node must be replaced (started after the fault) before healthy.
    replica_replaced_on: str | None = None
    needs_gcs_store: bool = False
    kubernetes: bool = False
    # Whether --outage (seconds down) and --grace (notice before SIGKILL) mean anything to it.
    uses_outage: bool = True
    uses_grace: bool = False
    # Runs in the chaos matrix (`make chaos`), 0: not in it; and its outage there when the
    # matrix's --outage does not fit (the partition's 30 s cut).
    matrix_runs: int = 0
    matrix_outage_s: float | None = None


FAULT_KINDS: tuple[FaultKind, ...] = (
    FaultKind("head", "SIGKILL every process of the head (a crashed head pod); down --outage s, then started again",
              may_restart=(HEAD.name,), kubernetes=True, matrix_runs=10),
    FaultKind("head-graceful", "SIGTERM every process of the head, SIGKILL after --grace (a deleted head pod)",
              may_restart=(HEAD.name,), kubernetes=True, uses_grace=True, matrix_runs=3),
    FaultKind("redis", "Redis stopped cleanly and kept down --outage s (a failover of the GCS store)",
              may_restart=(REDIS_UNIT, HEAD.name), needs_gcs_store=True, matrix_runs=3),
    FaultKind("redis-crash", "SIGKILL of redis-server (a crash): nothing restarts it but the supervisor, from its AOF",
              may_restart=(REDIS_UNIT, HEAD.name), needs_gcs_store=True, uses_outage=False),
    FaultKind("redis-freeze", "SIGSTOP of redis-server for --outage s (a hung store that keeps its connections)",
              may_restart=(REDIS_UNIT, HEAD.name), needs_gcs_store=True),
    FaultKind("worker", f"SIGKILL every process of {FAULTED_WORKER.name} (a crashed worker pod); down --outage s",
              may_restart=(FAULTED_WORKER.name,), replica_replaced_on=FAULTED_WORKER.name, matrix_runs=2),
    FaultKind("worker-drain", f"SIGTERM to {FAULTED_WORKER.name}'s `ray start` with --grace s of notice, SIGKILL "
              "after (a pod deleted for node expiry, consolidation or a spot interruption); down --outage s",
              may_restart=(FAULTED_WORKER.name,), replica_replaced_on=FAULTED_WORKER.name, kubernetes=True,
              uses_grace=True, matrix_runs=2),
    FaultKind("partition", "the head's link down for --outage s, its processes running (a network partition)",
              matrix_runs=1, matrix_outage_s=30.0),
    FaultKind("controller-kill", "SIGKILL of Serve's controller process (the GCS restarts the actor)",
              uses_outage=False),
    FaultKind("replica-kill", f"SIGKILL of the Serve replica process on {FAULTED_WORKER.name} (Serve replaces it)",
              replica_replaced_on=FAULTED_WORKER.name, uses_outage=False),
    FaultKind("head-worker", f"SIGKILL of the head and of {FAULTED_WORKER.name} together; down --outage s",
              may_restart=(HEAD.name, FAULTED_WORKER.name), replica_replaced_on=FAULTED_WORKER.name),
)

FAULTS: dict[str, FaultKind] = {kind.name: kind for kind in FAULT_KINDS}
FAULT_NAMES: tuple[str, ...] = tuple(FAULTS)
KUBERNETES_FAULTS: tuple[str, ...] = tuple(kind.name for kind in FAULT_KINDS if kind.kubernetes)
# The chaos matrix's default plan: (fault, runs), in the table's order.
MATRIX: tuple[tuple[str, int], ...] = tuple((kind.name, kind.matrix_runs) for kind in FAULT_KINDS if kind.matrix_runs)
