"""tensorlite.from_pretrained: the model class a folder's config.json model_type names."""
from . import folder as F

KNOWN = ("gpt2", "bert")


def from_pretrained(path):
    """A model from a local Hugging Face folder (config.json + model.safetensors, or a
    sharded model.safetensors.index.json): a GPT for model_type "gpt2", a BertModel for
    "bert", in eval mode. tensorlite never downloads; docs/PRETRAINED.md says how to get a
    folder."""
    folder = F.resolve_folder(path)
    mt = F.model_type_of(folder, F.read_config(folder))
    # imported here: the model modules call back into this package for their own loading
    from ..models import GPT, BertModel
    classes = {"gpt2": GPT, "bert": BertModel}
    if mt not in classes:
        raise F.PretrainedError(f"{folder}: model_type {mt!r} is not supported (tensorlite loads "
                                f"{', '.join(repr(k) for k in KNOWN)})")
    return classes[mt].from_pretrained(folder)
