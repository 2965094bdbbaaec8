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

    def step(self):
        self.last_epoch += 1
        f = self.factor(self.last_epoch)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

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
