"""Optimizer base: parameter groups, per-parameter state, zero_grad, state_dict."""
import copy
import math
import numbers

from ..backend.device import xp_of, to_numpy, xp_for


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = defaults
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        self.state = {}  # id(param) -> dict of arrays / numbers
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group):
        group = dict(group)
        group["params"] = list(group["params"])
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._check_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: a parameter appears in more than one group")
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: got a parameter that does not require grad")
        self.param_groups.append(group)

    def _check_group(self, group):
        """Raise for a hyper-parameter out of its range (each optimizer lists its own), so
        that a bad value fails here and not as NaN weights many steps later."""

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad._data[...] = 0

    def step(self):
        raise NotImplementedError

    def _state(self, p):
        return self.state.setdefault(id(p), {})

    # ---- saving and resuming ---------------------------------------------------------
    def state_dict(self):
        """{'state': {index: {name: numpy array or number}}, 'param_groups': [...]} where
        parameters are numbered in group order, as in PyTorch."""
        index = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            gd = {k: v for k, v in g.items() if k != "params"}
            gd["params"] = ids
            groups.append(gd)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                s = self.state.get(id(p))
                if s:
                    state[index[id(p)]] = {k: (to_numpy(v).copy() if hasattr(v, "shape") else v)
                                           for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd):
        groups = sd["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: {len(groups)} groups in the "
                             f"state, {len(self.param_groups)} in the optimizer")
        params = []
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError(f"{type(self).__name__}.load_state_dict: a group has "
                                 f"{len(theirs['params'])} parameters in the state but "
                                 f"{len(mine['params'])} in the optimizer")
            for k, v in theirs.items():
                if k != "params":
                    mine[k] = copy.deepcopy(v)
            params.extend(mine["params"])
        self.state = {}
        for i, s in sd["state"].items():
            p = params[int(i)]
            xp = xp_for(p.device)
            entry = {}
            for k, v in s.items():
                if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
                    if tuple(v.shape) != p.shape:
                        raise ValueError(f"{type(self).__name__}.load_state_dict: state '{k}' of "
                                         f"parameter {i} has shape {tuple(v.shape)}, the parameter "
                                         f"{p.shape}")
                    entry[k] = xp.array(v, dtype=p._data.dtype)
                else:
                    entry[k] = v.item() if hasattr(v, "item") else v
            self.state[id(p)] = entry

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k, v in g.items():
                if k != "params":
                    lines.append(f"    {k}: {v}")
        return "\n".join(lines) + "\n)"


def grad_array(p):
    g = p.grad._data
    return g if g.flags.c_contiguous else xp_of(g).ascontiguousarray(g)


def check_number(who, name, v, low=0.0, high=None, high_included=False):
    """TypeError unless v is a real number (not a bool), ValueError unless it is finite and
    low <= v (< or <=) high."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{who}: {name} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{who}: {name} must be a finite number, got {v!r}")
    if v < low or (high is not None and (v > high if high_included else v >= high)):
        rng = f">= {low:g}" if high is None else \
            f"{low:g} <= {name} {'<=' if high_included else '<'} {high:g}"
        raise ValueError(f"{who}: {name} must be {rng}, got {v!r}")


def check_betas(who, betas):
    """(beta1, beta2), each 0 <= b < 1, as a tuple."""
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise TypeError(f"{who}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        check_number(who, f"betas[{i}]", b, 0.0, 1.0)
    return tuple(betas)
