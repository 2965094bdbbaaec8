"""What every model config dataclass shares: plain dicts for config.json, both ways."""
from dataclasses import asdict


class DictConfig:
    """to_dict() for config.json; from_dict() refuses unknown fields by name (a typo or a
    file from another model must not be silently dropped)."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        return cls(**d)
