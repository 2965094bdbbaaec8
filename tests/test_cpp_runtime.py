"""The C++ extension's run-time settings, across its kernels (each op's own tests are in
tests/test_fused_<op>.py): the thread count (OMP_NUM_THREADS, set_num_threads, results
bitwise independent of it), the kernels' own thread pool (no OpenMP runtime, back-to-back
jobs, threads and fork), the instruction-set variant the loader picked (and the lower
ones, where the CPU and the build have them: a TL_NO_CLONES build has one variant), and
the vectorised float32 exp every kernel uses."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import tensorlite.reference as R

from _fused_helpers import close, f64, load, needs_cpp

pytestmark = needs_cpp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ISAS = ["avx512", "avx2", "base"]


@pytest.fixture
def C():
    """tensorlite._C, with its thread count and instruction-set variant restored after."""
    ext = load("cpp")
    threads, isa = ext.get_num_threads(), ext._isa()
    yield ext
    ext.set_num_threads(threads)
    ext._set_isa(isa)


def row_ops(C, x, w, tg):
    """Every row-wise kernel, forward and backward, on (x, w, targets)."""
    y, mean, rstd = C.layer_norm_forward(x, w, w, 1e-5)
    loss, lse = C.cross_entropy_forward(x, tg, -100, 0.1)
    return [C.softmax_forward(x), C.log_softmax_backward(x, x), y, mean, rstd,
            *C.layer_norm_backward(x, x, w, mean, rstd), loss, lse,
            C.cross_entropy_backward(x, tg, lse, loss, -100, 0.1),
            C.gelu_forward(x, "none"), C.gelu_backward(x, x, "tanh")]


def row_ops_reference(x, w, tg):
    x, w = f64(x), f64(w)
    y, mean, rstd = R.layer_norm_forward(x, w, w, 1e-5)
    loss, lse = R.cross_entropy_forward(x, tg, -100, 0.1)
    return [R.softmax_forward(x), R.log_softmax_backward(x, x), y, mean, rstd,
            *R.layer_norm_backward(x, x, w, mean, rstd), loss, lse,
            R.cross_entropy_backward(x, tg, lse, loss, -100, 0.1),
            R.gelu_forward(x, "none"), R.gelu_backward(x, x, "tanh")]


# ---------------------------------------------------------------- threads

def test_thread_count_does_not_change_results(rng, C):
    # big enough (> 2^17 elements) for the kernels to actually use both threads
    x = rng.standard_normal((613, 300)).astype(np.float32)
    w = rng.standard_normal(300).astype(np.float32)
    tg = rng.integers(0, 300, 613)
    C.set_num_threads(1)
    assert C.get_num_threads() == 1
    one = row_ops(C, x, w, tg)
    C.set_num_threads(2)
    assert C.get_num_threads() == 2
    two = row_ops(C, x, w, tg)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_attention_thread_count_gives_identical_bits(C):
    results = []
    for n in (1, 2):
        C.set_num_threads(n)
        for shape in [(1, 1, 300, 300, 32), (2, 3, 70, 90, 16)]:  # many / one key group(s)
            r = np.random.default_rng(1)
            B, H, Tq, Tk, D = shape
            q = r.standard_normal((B, H, Tq, D)).astype(np.float32)
            k = r.standard_normal((B, H, Tk, D)).astype(np.float32)
            v = r.standard_normal((B, H, Tk, D)).astype(np.float32)
            do = r.standard_normal(q.shape).astype(np.float32)
            o, lse = C.attention_forward(q, k, v, None, True, 0.2)
            results.append((o, lse) + tuple(C.attention_backward(q, k, v, o, lse, do, None,
                                                                 True, 0.2)))
    half = len(results) // 2
    for one, two in zip(results[:half], results[half:]):
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)


def test_thread_count_defaults_to_omp_num_threads():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c",
                          "from tensorlite import _C; print(_C.get_num_threads())"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert out.stdout.strip() == "1", out.stderr


def test_set_num_threads_rejects_zero(C):
    with pytest.raises(ValueError, match="set_num_threads"):
        C.set_num_threads(0)


def run_python(code, env=None, timeout=120):
    """Runs `code` in a fresh interpreter (a timeout guards against a hung pool)."""
    env = {**os.environ, **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False,
                         capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_thread_count_defaults_to_the_usable_cpus():
    out = run_python("""
        import os
        from tensorlite import _C
        print(_C.get_num_threads(), len(os.sched_getaffinity(0)))
    """, env={"OMP_NUM_THREADS": None})
    got, want = out.split()
    assert got == want


def test_thread_count_takes_the_first_of_an_omp_list():
    out = run_python("from tensorlite import _C; print(_C.get_num_threads())",
                     env={"OMP_NUM_THREADS": "3,1"})
    assert out.strip() == "3"


def test_no_openmp_runtime_is_loaded():
    # The kernels' threads are their own: an OpenMP runtime in the process would be the one
    # another library (PyTorch) configured first. A threaded kernel must also really start a
    # thread of the pool.
    out = run_python("""
        import os
        import numpy as np
        import tensorlite
        from tensorlite import _C
        def tasks():
            return len(os.listdir("/proc/self/task"))
        _C.set_num_threads(2)
        before = tasks()
        _C.softmax_forward(np.ones((1024, 512), np.float32))
        after = tasks()
        _C.set_num_threads(1)  # the worker goes: no thread is left behind
        alone = tasks()
        maps = open("/proc/self/maps").read()
        runtimes = [n for n in ("libgomp", "libomp", "libiomp") if n in maps]
        print(not runtimes, after - before, alone - before)
    """, env={"OMP_NUM_THREADS": None})
    assert out.split() == ["True", "1", "0"], out


def test_more_threads_than_cpus_give_identical_bits(rng, C):
    x = rng.standard_normal((613, 300)).astype(np.float32)
    w = rng.standard_normal(300).astype(np.float32)
    tg = rng.integers(0, 300, 613)
    q = rng.standard_normal((2, 3, 200, 32)).astype(np.float32)
    do = rng.standard_normal(q.shape).astype(np.float32)

    def everything():
        o, lse = C.attention_forward(q, q, q, None, True, 0.2)
        return row_ops(C, x, w, tg) + [o, lse, *C.attention_backward(q, q, q, o, lse, do, None,
                                                                     True, 0.2)]
    C.set_num_threads(1)
    want = everything()
    for n in (3, 5, 2):
        C.set_num_threads(n)
        for a, b in zip(want, everything()):
            np.testing.assert_array_equal(a, b)


def test_many_back_to_back_jobs(rng, C):
    # Alternating one-thread and pool jobs, with the pool resized in between: every job
    # must run exactly once on every thread (a lost or doubled worker changes rows).
    big = rng.standard_normal((256, 512)).astype(np.float32)  # 2^17 elements: threaded
    small = rng.standard_normal((4, 33)).astype(np.float32)
    C.set_num_threads(1)
    want_big, want_small = C.softmax_forward(big), C.softmax_forward(small)
    for i in range(10_000):
        if i % 1000 == 0:
            C.set_num_threads((1, 2, 3, 2)[(i // 1000) % 4])
        x, want = (big, want_big) if i % 2 else (small, want_small)
        got = C.softmax_forward(x)
        if i % 7 == 0 or i % 1000 < 2:
            np.testing.assert_array_equal(got, want)


def test_kernels_from_several_python_threads(rng, C):
    # The kernels release the GIL: jobs from two Python threads share the one pool.
    C.set_num_threads(2)
    q = rng.standard_normal((2, 2, 160, 32)).astype(np.float32)
    x = rng.standard_normal((512, 300)).astype(np.float32)
    want_o, _ = C.attention_forward(q, q, q, None, True, 0.2)
    want_s = C.softmax_forward(x)
    bad = []

    def loop(attn):
        for _ in range(150):
            if attn:
                ok = np.array_equal(C.attention_forward(q, q, q, None, True, 0.2)[0], want_o)
            else:
                ok = np.array_equal(C.softmax_forward(x), want_s)
            if not ok:
                bad.append(attn)
    threads = [threading.Thread(target=loop, args=(a,)) for a in (True, False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a kernel hung"
    assert not bad


@pytest.mark.parametrize("spin_us", ["0", "300"])
def test_narrow_and_wide_jobs_with_spinning_workers(spin_us):
    # Workers spin for the next job (csrc/thread_pool.cpp) and a job narrower than the pool
    # does not wait for the workers it leaves out, so the next job can be posted while one of
    # them is still looking at this one: each must still run every job it is part of exactly
    # once. A 4-thread pool (spinning forced even on fewer CPUs), 2-thread and 4-thread jobs
    # alternating, every result checked; and with spinning off (0) the same.
    run_python("""
        import numpy as np
        from tensorlite import _C
        rng = np.random.default_rng(0)
        wide = rng.standard_normal((256, 512)).astype(np.float32)   # 4 threads
        narrow = rng.standard_normal((2, 70000)).astype(np.float32)  # 2 rows: 2 threads
        _C.set_num_threads(1)
        want_w, want_n = _C.softmax_forward(wide), _C.softmax_forward(narrow)
        _C.set_num_threads(4)
        for i in range(3000):
            x, want = (wide, want_w) if i % 3 == 0 else (narrow, want_n)
            assert np.array_equal(_C.softmax_forward(x), want), i
    """, env={"TENSORLITE_POOL_SPIN_US": spin_us}, timeout=240)


def test_fork_after_threaded_kernels():
    # The pool's workers do not survive fork(): the child must build its own (the crash
    # tests' fork server forks after importing tensorlite), here twice over.
    run_python("""
        import os
        import numpy as np
        from tensorlite import _C
        _C.set_num_threads(2)
        x = np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float32)
        q = np.random.default_rng(1).standard_normal((2, 2, 160, 32)).astype(np.float32)
        want, want_o = _C.softmax_forward(x), _C.attention_forward(q, q, q, None, True, 0.2)[0]

        def child(depth):
            ok = all(np.array_equal(_C.softmax_forward(x), want) for _ in range(50))
            _C.set_num_threads(3)
            ok = ok and np.array_equal(_C.attention_forward(q, q, q, None, True, 0.2)[0], want_o)
            _C.set_num_threads(2)
            if ok and depth < 2:
                ok = fork(depth + 1)
            os._exit(0 if ok else 1)

        def fork(depth):
            pid = os.fork()
            if pid == 0:
                child(depth)
            _, status = os.waitpid(pid, 0)
            return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

        assert fork(1)
        assert np.array_equal(_C.softmax_forward(x), want)  # the parent's pool still works
    """, timeout=120)


# ---------------------------------------------------------------- instruction-set variants

def test_the_loader_picks_a_known_variant(C):
    best = C._isa()
    assert best in ISAS
    assert C._attention_isa() == best  # the older name, kept for the attention tests
    assert C._set_isa("auto") == best and C._isa() == best


def test_rejects_unknown_instruction_set(C):
    with pytest.raises(ValueError, match="avx512"):
        C._attention_set_isa("neon")
    with pytest.raises(ValueError, match=r"_set_isa: expected 'auto', 'avx512', 'avx2' or "
                                         r"'base', got 'neon'"):
        C._set_isa("neon")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("isa", ISAS)
def test_every_row_op_on_every_variant(rng, C, isa, dtype):
    try:
        C._set_isa(isa)
    except ValueError as e:  # a CPU without it, or a TL_NO_CLONES build with one variant
        pytest.skip(str(e))
    assert C._isa() == isa
    x = rng.standard_normal((37, 70)).astype(dtype)  # rows with vector tails
    w = rng.standard_normal(70).astype(dtype)
    tg = rng.integers(0, 70, 37)
    for got, want in zip(row_ops(C, x, w, tg), row_ops_reference(x, w, tg)):
        close(got, want, dtype, scale=10)


# ---------------------------------------------------------------- the float32 exp

def test_float32_exp_is_accurate_across_its_range(C):
    # log_softmax_backward with sum(dy) = 1 and dy = 0 elsewhere returns -exp(y): a
    # direct look at the kernels' vectorised float32 exp
    y = np.concatenate([[0.0], np.linspace(-87.0, 0.0, 100001)]).astype(np.float32)[None, :]
    dy = np.zeros_like(y)
    dy[0, 0] = 1.0
    got = -C.log_softmax_backward(y, dy)[0, 1:].astype(np.float64)
    want = np.exp(y[0, 1:].astype(np.float64))
    assert np.abs(got / want - 1).max() < 3e-7
    assert C.log_softmax_backward(np.array([[0.0, -200.0]], np.float32),
                                  np.array([[1.0, 0.0]], np.float32))[0, 1] == 0.0
