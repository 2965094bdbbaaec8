"""tensorlite.distributed: PyTorch's torch.distributed names over MPI (mpi4py, CPU) and NCCL
(cupy.cuda.nccl, one GPU per rank; untested on hardware). Launch with
`mpiexec -n 2 python script.py`; docs/DISTRIBUTED.md tells the whole story.

Nothing here imports mpi4py or CuPy until init_process_group picks a backend."""
from .process_group import (DistBackendError, ReduceOp, Work, all_gather, all_reduce,  # noqa: F401
                            barrier, broadcast, default_pg_timeout, destroy_process_group,
                            get_backend, get_rank, get_world_size, init_process_group,
                            is_available, is_initialized, launcher_info)
from .ddp import DistributedDataParallel  # noqa: F401

__all__ = ["DistBackendError", "ReduceOp", "Work", "all_gather", "all_reduce", "barrier",
           "broadcast", "default_pg_timeout", "destroy_process_group", "get_backend", "get_rank",
           "get_world_size", "init_process_group", "is_available", "is_initialized",
           "launcher_info", "DistributedDataParallel"]
