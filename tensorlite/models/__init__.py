"""Models built only from tensorlite modules."""
from .gpt import GPT, GPTConfig, sample_next  # noqa: F401
from .encoder import Encoder, EncoderConfig  # noqa: F401
from .bert import BertConfig, BertModel, BertOutput, encode_sentences  # noqa: F401
from .seq2seq import (Seq2SeqConfig, Seq2SeqTransformer, seq2seq_accuracy,  # noqa: F401,E402
                      train_seq2seq)
from .bert import (BertClassificationConfig, BertForSequenceClassification,  # noqa: F401,E402
                   SequenceClassifierOutput, classification_config)
