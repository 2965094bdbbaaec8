"""Training data as NumPy arrays: tokenized text files and synthetic tasks.

Nothing here depends on tensorlite's Tensor: batches come out as int64 NumPy
arrays, and the training loop turns them into tensors on whatever device it uses.
"""

from .tasks import IGNORE_INDEX, AdditionTask, SortTask
from .text import DataError, TokenFile, encode_file, get_batch, split_train_val

__all__ = [
    "IGNORE_INDEX", "AdditionTask", "SortTask",
    "DataError", "TokenFile", "encode_file", "get_batch", "split_train_val",
]
