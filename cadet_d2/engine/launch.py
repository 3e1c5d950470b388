"""Start one or more training processes: ``--num-gpus N`` on one machine, or under torchrun.

Detectron2 v0.6's ``launch`` always initialises NCCL and needs one GPU per process. This one:

* picks the backend from the device: ``nccl`` for ``MODEL.DEVICE cuda`` with CUDA present,
  ``gloo`` otherwise (``MODEL.DEVICE cpu``: N CPU processes, each with ``cpu_count // N``
  torch threads unless ``OMP_NUM_THREADS`` says otherwise);
* spawns ``num_processes`` processes per machine (``--num-gpus``), ranks
  ``machine_rank * num_processes + local_rank``, rendezvous at ``dist_url``
  (``"auto"``: a free local port);
* under ``torchrun`` (``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in the environment) spawns
  nothing: the process joins the group through ``env://`` (``MASTER_ADDR``/``MASTER_PORT``);
* sets ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` in each spawned process, as torchrun does
  (:func:`local_rank`), and sets up Detectron2's per-machine process group where Detectron2
  has a public function for it (current Detectron2, not v0.6: :mod:`cadet_d2.engine.compat`).

See docs/scaling.md for single-machine, multi-machine and SLURM examples.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm

from .compat import create_local_process_group
from .signals import DEFAULT_STOP_SIGNALS, join_forwarding_stop_signals

logger = logging.getLogger("cadet_d2")

DEFAULT_TIMEOUT = timedelta(minutes=30)
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def pick_backend(device: str) -> str:
    """``nccl`` for a CUDA device on a machine with CUDA, else ``gloo``."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return "nccl"
    if str(device).startswith("cuda"):
        logger.warning(f"[cadet] MODEL.DEVICE {device} but CUDA is not available: using the gloo backend")
    return "gloo"


class DeviceError(ValueError, RuntimeError):
    """``MODEL.DEVICE`` (or the process count) does not fit this machine: a config value the user
    must change (a ``ValueError``, so tools end with ``error: ...``)."""


def check_device(device: str, processes_per_machine: int = 1) -> None:
    """Stop before any process starts (or any model is built) when ``MODEL.DEVICE`` names CUDA on
    a machine without a usable GPU, or more processes per machine (``--num-gpus``; torchrun's
    ``LOCAL_WORLD_SIZE``) than it has GPUs, or a GPU index it lacks (``cuda:3``): :class:`DeviceError`.
    Used by train_net and by :func:`cadet_d2.inference.load_model` (predict, fusion_maps)."""
    device = str(device)
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise DeviceError(f"MODEL.DEVICE {device!r} but CUDA is not available here (torch.cuda.is_available() is "
                           f"False; PyTorch {torch.__version__}): add MODEL.DEVICE cpu to train or evaluate on the "
                           "CPU (train_net with --num-gpus N: N CPU processes, gloo; predict: --device cpu)")
    count = torch.cuda.device_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 0)) if under_torchrun() else processes_per_machine
    if local > count:
        raise DeviceError(f"{local} processes per machine on MODEL.DEVICE {device!r} but this machine has "
                           f"{count} GPU(s): use --num-gpus {count} or fewer")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= count):
        raise DeviceError(f"MODEL.DEVICE {device!r}: this machine has GPUs cuda:0 to cuda:{count - 1}")


def planned_world_size(processes_per_machine: int, num_machines: int = 1) -> int:
    """The number of processes of the job: torchrun's ``WORLD_SIZE``, else ``--num-gpus x --num-machines``."""
    if under_torchrun():
        return int(os.environ["WORLD_SIZE"])
    return max(1, processes_per_machine * num_machines)


def under_torchrun() -> bool:
    """True when torchrun (or another launcher) set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def local_rank() -> int:
    """This process's rank on its machine: 0 in a single process, else ``LOCAL_RANK`` (set by
    torchrun or by :func:`launch`)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare_device(backend: str, local_rank: int, local_size: int) -> None:
    if backend == "nccl":
        if local_size > torch.cuda.device_count():
            raise RuntimeError(f"{local_size} processes per machine but only {torch.cuda.device_count()} GPU(s)")
        torch.cuda.set_device(local_rank)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))  # share the cores


def _init(backend: str, init_method: str, world_size: int, rank: int, local_rank: int, local_size: int,
          timeout: timedelta) -> None:
    _prepare_device(backend, local_rank, local_size)
    try:
        dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size, rank=rank,
                                timeout=timeout)
    except Exception:
        logger.error(f"[cadet] process group {backend} at {init_method} (rank {rank}/{world_size}) failed")
        raise
    create_local_process_group(local_size)
    comm.synchronize()  # a barrier, against timeouts right after init (as Detectron2 does)


def _finish() -> None:
    """Tear the process group down together: a rank that destroys it while another still talks
    to it can abort gloo ("terminate called without an active exception")."""
    comm.synchronize()
    dist.destroy_process_group()


def _spawned_worker(local_rank: int, main_func: Callable, world_size: int, local_size: int, machine_rank: int,
                    dist_url: str, args: tuple, timeout: timedelta, backend: str) -> None:
    rank = machine_rank * local_size + local_rank
    os.environ.update(LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(local_size))
    _init(backend, dist_url, world_size, rank, local_rank, local_size, timeout)
    main_func(*args)
    _finish()


def launch(main_func: Callable, num_processes_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str | None = None, args: tuple = (), timeout: timedelta = DEFAULT_TIMEOUT, *,
           device: str = "cuda", backend: str | None = None,
           stop_signals: Sequence[str] = DEFAULT_STOP_SIGNALS) -> Any:
    """Run ``main_func(*args)`` in every process of the job (see the module docstring).

    ``num_processes_per_machine`` is ``--num-gpus`` (processes, GPUs or not); ``device`` is
    ``MODEL.DEVICE`` and picks the backend unless ``backend`` is given; ``stop_signals``
    (``CADET.CHECKPOINT.STOP_SIGNALS``) are passed on to spawned processes. Returns ``main_func``'s
    result when it runs in this process (one process, or torchrun), else None.
    """
    backend = backend or pick_backend(device)
    if under_torchrun():
        world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank = int(os.environ["LOCAL_RANK"])
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        if num_processes_per_machine > 1 or num_machines > 1:
            logger.warning("[cadet] running under torchrun: --num-gpus/--num-machines are ignored "
                           f"(torchrun's world size {world_size}, {local_size} per machine)")
        if world_size == 1:
            return main_func(*args)
        _init(backend, "env://", world_size, rank, local_rank, local_size, timeout)
        result = main_func(*args)
        _finish()
        return result
    world_size = num_machines * num_processes_per_machine
    if world_size <= 1:
        return main_func(*args)
    if not dist_url or dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    context = mp.spawn(_spawned_worker, nprocs=num_processes_per_machine, daemon=False, join=False,
                       args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args, timeout,
                             backend))
    join_forwarding_stop_signals(context, stop_signals)  # passed on to the processes; their exit 75 is ours
    return None
