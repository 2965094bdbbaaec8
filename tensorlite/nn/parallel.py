"""PyTorch's path for data parallelism: tensorlite.nn.parallel.DistributedDataParallel is
tensorlite.distributed's (docs/DISTRIBUTED.md)."""
from ..distributed.ddp import DistributedDataParallel  # noqa: F401
