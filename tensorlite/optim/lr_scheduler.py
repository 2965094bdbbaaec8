"""Learning-rate schedules. Each sets group['lr'] = base_lr * factor(step) on step()."""
import math


class LRScheduler:
    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def factor(self, step):
        raise NotImplementedError

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def lr_at(self, base, step):
        """The lr of a group whose initial lr is base, at step (the closed form)."""
        return base * self.factor(step)

    def step(self):
        self.last_epoch += 1
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.lr_at(base, self.last_epoch)

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, sd):
        self.base_lrs = list(sd["base_lrs"])
        self.last_epoch = sd["last_epoch"] - 1
        self.step()


class LambdaLR(LRScheduler):
    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        return self.lr_lambda(step)


class ConstantLR(LRScheduler):
    def factor(self, step):
        return 1.0


class StepLR(LRScheduler):
    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        return self.gamma ** (step // self.step_size)


def warmup_cosine(step, warmup, max_steps, min_ratio):
    """Linear warmup from ~0 to 1 over `warmup` steps, then cosine decay to `min_ratio` at
    max_steps, flat after (nanoGPT's schedule, as a factor of the peak lr)."""
    if warmup and step < warmup:
        return (step + 1) / (warmup + 1)
    if step >= max_steps:
        return min_ratio
    progress = (step - warmup) / max(1, max_steps - warmup)
    return min_ratio + 0.5 * (1 + math.cos(math.pi * progress)) * (1 - min_ratio)


class WarmupCosineLR(LRScheduler):
    def __init__(self, optimizer, warmup_steps, max_steps, min_lr_ratio=0.1, last_epoch=-1):
        self.warmup, self.max_steps, self.min_ratio = warmup_steps, max_steps, min_lr_ratio
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        return warmup_cosine(step, self.warmup, self.max_steps, self.min_ratio)


class CosineAnnealingLR(LRScheduler):
    """eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2: down to eta_min at T_max,
    and (as PyTorch's closed form) back up over the next T_max steps if stepped further."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):  # noqa: N803
        if T_max <= 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base, step):
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * step / self.T_max)) / 2


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine from base to eta_min over T_0 steps, then restart at base; each period is
    T_mult times the one before (SGDR)."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):  # noqa: N803
        if not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"CosineAnnealingWarmRestarts: T_0 must be a positive int, got {T_0!r}")
        if not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"CosineAnnealingWarmRestarts: T_mult must be an int >= 1, got {T_mult!r}")
        self.T_0, self.T_mult, self.eta_min = T_0, T_mult, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base, step):
        t, period = step, self.T_0
        while t >= period:  # walk the periods: at most log(step) of them when T_mult > 1
            t -= period
            period *= self.T_mult
            if self.T_mult == 1:
                t %= period
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t / period)) / 2


class LinearLR(LRScheduler):
    """The factor goes linearly from start_factor to end_factor over total_iters steps."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1] and end_factor in [0, 1], "
                             f"got {start_factor} and {end_factor}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        frac = min(step, self.total_iters) / self.total_iters if self.total_iters else 1.0
        return self.start_factor + (self.end_factor - self.start_factor) * frac


class ExponentialLR(LRScheduler):
    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        return self.gamma ** step


class MultiStepLR(LRScheduler):
    """The factor is gamma ** (the number of milestones reached)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def factor(self, step):
        return self.gamma ** sum(1 for m in self.milestones if step >= m)
