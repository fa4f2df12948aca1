"""Several machines per run outside SLURM (trainer=nodes): what defines the nodes, the run folder they share,
and the one-line refusals when neither holds. Only the standard library here: the checks run before torch.

Every machine starts its own process(es): torchrun (which sets TORCHELASTIC_RUN_ID, RANK, GROUP_RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT; Lightning's TorchElasticEnvironment reads them), or the user with
Lightning's variables (MASTER_ADDR, MASTER_PORT, NODE_RANK; LightningEnvironment, which then starts the node's
other devices itself). Each process composes its own config, so the run folder must come from something every
node shares: torchrun's run id (--rdzv-id), or a hydra.run.dir given alike on every node.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from dlopt.errors import SweepError, UserError

SEE = "see README, Several machines"
TORCHRUN = ("torchrun --nnodes=N --nproc-per-node=DEVICES --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT "
            "--rdzv-id=ID -m dlopt train trainer=nodes ...")
LIGHTNING = ("MASTER_ADDR=HOST MASTER_PORT=PORT NODE_RANK=K dlopt train trainer=nodes trainer.num_nodes=N "
             "hydra.run.dir=DIR ...")
LIGHTNING_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK")


def launcher(env: Mapping[str, str] = os.environ) -> str | None:
    """Who defines the nodes of this process: 'slurm', 'torchrun', 'lightning' (its variables, all three or some),
    'other' (a cluster Lightning detects by its own variables: MPI, LSF, Kubeflow), or None."""
    if "SLURM_NTASKS" in env:
        return "slurm"
    if "TORCHELASTIC_RUN_ID" in env:  # torch.distributed.is_torchelastic_launched()
        return "torchrun"
    if any(key in env for key in LIGHTNING_VARIABLES):
        return "lightning"
    if any(key in env for key in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LSB_JOBID")):
        return "other"
    return None


def run_id(env: Mapping[str, str] = os.environ) -> str:
    """The `${dlopt.run_id:}` of conf/trainer/nodes.yaml's run folder: torchrun's run id, the same on every node.
    Raises UserError when there is none (it is resolved before Hydra creates the folder: nothing is written)."""
    found = launcher(env)
    given = env.get("TORCHELASTIC_RUN_ID", "")
    if found == "torchrun" and given and given != "none":  # "none": torchrun's default, shared by every run
        return given
    if found == "torchrun":
        why = ("torchrun was started without a run id (--rdzv-id=ID): give every node the same --rdzv-id, or "
               "hydra.run.dir=DIR")
    elif found == "slurm":
        why = "under SLURM use trainer=slurm (its run folder is named after the job)"
    elif found is not None:
        why = "give every node the same hydra.run.dir=DIR"
    else:
        why = no_nodes_hint()
    raise UserError(f"trainer=nodes needs a run folder every node shares: {why}; {SEE}")


def no_nodes_hint() -> str:
    return f"start every machine with `{TORCHRUN}`, or with `{LIGHTNING}`"


def global_rank(devices: Any, env: Mapping[str, str] = os.environ) -> str:
    """The `${dlopt.rank:${trainer.devices}}` of conf/trainer/nodes.yaml's log file name: this process's global
    rank, from the launcher's RANK, else NODE_RANK (or GROUP_RANK) x devices + LOCAL_RANK (Lightning's own)."""
    if "RANK" in env:
        return env["RANK"]
    node, local = env.get("NODE_RANK", env.get("GROUP_RANK", "0")), env.get("LOCAL_RANK", "0")
    try:
        return str(int(node) * int(devices) + int(local))
    except (TypeError, ValueError):  # devices=auto or a list of device ids
        return f"{node}.{local}"


def check_nodes(trainer: Mapping[str, Any], in_sweep: bool, own_folder: bool,
                env: Mapping[str, str] = os.environ) -> None:
    """Raise UserError (SweepError in a sweep) when trainer.num_nodes > 1 cannot make one run: no launcher
    defines the nodes (node 0 would wait for the others for ever), Lightning's variables only in part, a node
    rank past num_nodes, a process count torchrun disagrees with, a sweep (-m) outside SLURM, or a run folder
    this process claimed for itself (`own_folder`: the other nodes would each claim theirs)."""
    nodes = trainer.get("num_nodes", 1)
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise UserError(f"trainer.num_nodes={nodes} is not valid; expected an integer >= 1 (machines)")
    found = launcher(env)
    node = env.get("NODE_RANK", "0")
    if found == "lightning" and (not node.isdigit() or int(node) >= nodes):
        raise UserError(f"NODE_RANK={node} is not valid with trainer.num_nodes={nodes}: a machine's rank goes from 0 "
                        f"(the machine at MASTER_ADDR) to num_nodes - 1; give every machine trainer.num_nodes=N")
    if nodes == 1:
        return
    if in_sweep and found != "slurm":
        raise SweepError(f"trainer.num_nodes={nodes} inside a sweep (-m): every machine would run the whole sweep; "
                         "sweep with trainer.num_nodes=1, or on SLURM give each trial its own nodes "
                         f"(hydra/launcher=submitit_slurm trainer=slurm); {SEE}")
    if found is None:
        raise UserError(f"trainer.num_nodes={nodes} but no environment defines the machines (no SLURM, torchrun or "
                        f"MASTER_ADDR/MASTER_PORT/NODE_RANK): {no_nodes_hint()}; {SEE}")
    if found == "lightning":
        missing = [key for key in LIGHTNING_VARIABLES if not env.get(key)]
        if missing:
            raise UserError(f"trainer.num_nodes={nodes} with Lightning's variables needs all of "
                            f"{', '.join(LIGHTNING_VARIABLES)} on every machine; {', '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not set ({LIGHTNING}); {SEE}")
    if found == "torchrun":
        devices, world = trainer.get("devices"), env.get("WORLD_SIZE", "")
        if isinstance(devices, int) and world.isdigit() and devices * nodes != int(world):
            raise UserError(f"trainer.num_nodes={nodes} x trainer.devices={devices} processes, but torchrun started "
                            f"{world} (--nnodes x --nproc-per-node); make them match, or use trainer=nodes, which "
                            "takes both from torchrun")
    if own_folder and found != "other":
        use = ("use trainer=slurm (a folder named after the job)" if found == "slurm" else
               "use trainer=nodes (a folder named after torchrun's --rdzv-id), or give every machine the same "
               "hydra.run.dir=DIR" if found == "torchrun" else
               "use trainer=nodes and give every machine the same hydra.run.dir=DIR")
        raise UserError(f"trainer.num_nodes={nodes}: every machine would write its own run folder; {use}; {SEE}")
