"""tensorlite.nn: modules and layers (PyTorch's names)."""
from . import functional, init  # noqa: F401
from .module import Module  # noqa: F401
from .parameter import Parameter  # noqa: F401
from .layers import (Linear, Embedding, LayerNorm, Dropout, GELU, ReLU, Tanh, SiLU, Identity,  # noqa: F401
                     Softmax, CrossEntropyLoss, RMSNorm)
from .containers import Sequential, ModuleList, ModuleDict  # noqa: F401
from .attention import MultiHeadAttention, CausalSelfAttention, KVCache  # noqa: F401
from .transformer import MLP, Block  # noqa: F401
from .utils import clip_grad_norm_  # noqa: F401
from .multihead_attention import MultiheadAttention, MultiheadAttentionCache  # noqa: F401,E402
from .encoder_decoder import (  # noqa: F401,E402
    Transformer, TransformerEncoder, TransformerDecoder, TransformerEncoderLayer,
    TransformerDecoderLayer, TransformerDecoderCache)
from . import parallel  # noqa: F401,E402 (tensorlite.nn.parallel.DistributedDataParallel)
