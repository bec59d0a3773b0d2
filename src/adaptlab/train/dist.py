"""Running the loop under `accelerate launch` (or torchrun / mpirun): the device, what each rank
trains on, and state that FSDP shards. Without a launcher it is the case world=1, rank=0.

The launch is read from the environment the launchers set: torchrun's LOCAL_RANK / WORLD_SIZE,
MPI's PMI_SIZE / OMPI_COMM_WORLD_SIZE / MV2_COMM_WORLD_SIZE, accelerate's ACCELERATE_USE_CPU /
ACCELERATE_MIXED_PRECISION (its one-process launcher sets only those).
"""
from __future__ import annotations

import os

from ..errors import AdaptlabError

_WORLD = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]


def world_size() -> int:
    """Processes the launcher started (1 without one)."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(_WORLD, 1)


def launched() -> bool:
    env = os.environ
    return (world_size() > 1 or "LOCAL_RANK" in env or "ACCELERATE_USE_CPU" in env
            or "ACCELERATE_MIXED_PRECISION" in env)


def use_cpu(device: str) -> bool:
    """`Accelerator(cpu=...)`. Without a launcher: TuneConfig.device. Under one, the launcher
    decides: its --cpu; else the accelerators it finds, and the CPU (gloo) where there are none:
    with cpu=False there, accelerate would start N independent one-process runs."""
    from accelerate.utils import parse_flag_from_env

    if not launched():
        return device == "cpu"
    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    return world_size() > 1 and not _accelerator_present()


def _accelerator_present() -> bool:
    import torch
    from accelerate.utils import is_mlu_available, is_npu_available, is_xpu_available

    return torch.cuda.is_available() or is_xpu_available() or is_npu_available() or is_mlu_available()


def accelerator(cfg):
    """The run's Accelerator; refuses a launch whose processes did not join one process group."""
    from accelerate import Accelerator

    # bf16 = autocast over fp32 master weights: pure-bf16 backward is pathologically slow on CPU.
    # cfg.precision wins over the launcher's --mixed_precision: it is part of the stage's config.
    acc = Accelerator(cpu=use_cpu(cfg.device),
                      mixed_precision="bf16" if cfg.precision == "bf16" else "no")
    if world_size() > 1 and acc.num_processes != world_size():
        raise AdaptlabError(
            f"launched as {world_size()} processes, but accelerate set up {acc.num_processes} "
            f"({acc.distributed_type}): each process would train the whole job and write the "
            "output. Check the launcher's --cpu / --multi_gpu flags and the visible devices")
    return acc


def shard(batch: list[int], rank: int, world: int) -> tuple[list[int], bool]:
    """Rank's disjoint share of a global micro-batch (every world-th example, from its rank; the
    batch is sorted by length, so shares are alike in length), and whether it is real. A rank
    left with none (the epoch's last batch, smaller than world) gets the batch's first example
    to run with weight 0: DDP needs every rank in every gradient all-reduce."""
    mine = batch[rank::world]
    return (mine, True) if mine else (batch[:1], False)


def labelled(rows, indices) -> int:
    """Tokens the loss averages over in these examples (labels after the shift by one)."""
    return sum(sum(1 for y in rows[i][1][1:] if y != -100) for i in indices)


def is_fsdp(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.FSDP


def optimizer_state(acc, model, opt) -> dict:
    """The optimizer state to checkpoint. Under FSDP each rank holds its shard only: gather the
    full state, keyed by parameter name (a collective: every rank calls this)."""
    if not is_fsdp(acc):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt.optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(acc, model, opt, state: dict) -> None:
    """Put `optimizer_state`'s result back (under FSDP every rank takes its shard of it)."""
    if not is_fsdp(acc):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, opt.optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def step_seed(seed: int, step: int, rank: int) -> int:
    """Several processes: each step's dropout etc. draws from (seed, step, rank), so ranks draw
    differently and a resumed run replays every rank's draws without restoring their RNGs."""
    return (seed * 1_000_003 + step) * 1_009 + rank
