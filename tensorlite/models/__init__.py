"""Models built only from tensorlite modules."""
from .gpt import GPT, GPTConfig, sample_next  # noqa: F401
from .encoder import Encoder, EncoderConfig  # noqa: F401
from .bert import BertConfig, BertModel, BertOutput, encode_sentences  # noqa: F401
