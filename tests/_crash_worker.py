"""A fork server for tests/test_crash_safety.py: imports tensorlite once, then runs each
`tensorlite` command it is sent in a forked child, so that the harness can kill -9 dozens
of training runs without paying Python's and NumPy's start-up for every one.

Protocol, one JSON object a line on stdin, one answer a line on stdout:
    {"run": [argv...], "log": PATH, "env": {NAME: VALUE}}  -> {"pid": PID}
    {"wait": PID}                                            -> {"pid": PID, "code": N}
code is the exit status, or minus the signal that ended the child (-9 after SIGKILL).
"""
import json
import os
import sys

# one BLAS/OpenMP thread: nothing runs threads in this process when it forks, so every child
# starts clean, and the reference run computes exactly like the interrupted ones
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

from tensorlite.cli import main  # noqa: E402


def _child(argv, log, env):
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.environ.update(env)
    sys.stdout.reconfigure(line_buffering=True)  # the harness watches for the "model:" line
    code = 1
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve():
    for line in sys.stdin:
        req = json.loads(line)
        if "run" in req:
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(req["run"], req["log"], req.get("env", {}))
            answer = {"pid": pid}
        else:
            pid, status = os.waitpid(req["wait"], 0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            answer = {"pid": pid, "code": code}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
