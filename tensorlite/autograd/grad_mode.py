"""Whether operations record the graph (no_grad / enable_grad) and anomaly detection."""
import functools
import threading

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "enabled", True)


def set_grad_enabled(mode):
    _state.enabled = bool(mode)


class _GradMode:
    """Context manager and decorator, like torch.no_grad / torch.enable_grad."""
    mode = True

    def __enter__(self):
        self._prev = is_grad_enabled()
        set_grad_enabled(self.mode)

    def __exit__(self, *exc):
        set_grad_enabled(self._prev)

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    mode = False


class enable_grad(_GradMode):
    mode = True


_anomaly = [False]


def set_detect_anomaly(mode=True):
    """When on, the first op whose forward or backward produces NaN/inf raises, naming the op."""
    _anomaly[0] = bool(mode)


def is_anomaly_enabled():
    return _anomaly[0]


class detect_anomaly:
    def __enter__(self):
        self._prev = _anomaly[0]
        _anomaly[0] = True

    def __exit__(self, *exc):
        _anomaly[0] = self._prev
