// The fused kernels' own thread pool, in place of OpenMP.
//
// Why not OpenMP: an extension linked to libgomp binds to whichever libgomp.so.1 the process
// loaded first. PyTorch ships its own and initialises it at `import torch`, before tensorlite
// could set OMP_WAIT_POLICY, so its idle workers spun on the cores that BLAS and Python need
// (a small GPT step went from ~45 to ~125 ms on 2 cores with torch merely imported). A pool of
// our own behaves the same whatever else is loaded.
//
// The contract the kernels rely on:
//   * parallel(nth, fn) calls fn(tid, nth) once for every tid < nth, the calling thread being
//     tid 0, and returns when all have returned (a fork/join, like `omp parallel`).
//   * Idle workers watch for the next job for up to 100 us (TENSORLITE_POOL_SPIN_US), then
//     sleep on a condition variable: back-to-back kernels skip the wake-up, and a pool left
//     idle costs nothing (thread_pool.cpp says why and what it measured).
//   * Jobs are serialised: two Python threads running kernels (GIL released) take turns, and
//     a parallel() inside a job runs inline on its thread (nth = 1), as nested OpenMP did.
//   * An exception thrown by fn on any thread is rethrown on the caller after the join (the
//     kernels throw none inside their parallel parts; this only keeps a bug from killing the
//     process with std::terminate from a worker).
//   * After fork() the child has no workers; its pool is rebuilt at its first job.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

namespace tl {

// Threads a job may use: OMP_NUM_THREADS when set (the variable people already use for the
// OpenMP build and for other libraries), else the CPUs this process may run on.
int max_threads();
// n >= 1 (checked by the caller). Surplus workers stop now; missing ones start at the next job.
void set_max_threads(int n);
// CPUs this process may run on (sched_getaffinity), what omp_get_num_procs reported.
int num_procs();

namespace detail {
using JobFn = void (*)(void* ctx, int tid, int nth);
void run_job(int nth, JobFn fn, void* ctx);
}  // namespace detail

template <class F>
void parallel(int nth, F&& fn) {
    if (nth <= 1) {
        fn(0, 1);
        return;
    }
    using Fn = std::remove_reference_t<F>;
    detail::run_job(
        nth, [](void* ctx, int tid, int n) { (*static_cast<Fn*>(ctx))(tid, n); },
        const_cast<void*>(static_cast<const void*>(&fn)));
}

// body(i) for i in [0, n), each thread one contiguous slice (OpenMP's schedule(static)).
template <class F>
void parallel_for_static(int nth, int64_t n, F&& body) {
    parallel(std::min<int64_t>(nth, std::max<int64_t>(n, 1)), [&](int t, int nt) {
        const int64_t per = (n + nt - 1) / nt;
        const int64_t b = std::min(n, t * per), e = std::min(n, b + per);
        for (int64_t i = b; i < e; ++i) body(i);
    });
}

// task(i, tid) for i in [0, n), handed out one at a time (OpenMP's schedule(dynamic, 1)):
// for few tasks of uneven cost.
template <class F>
void parallel_for_dynamic(int nth, int64_t n, F&& task) {
    std::atomic<int64_t> next{0};
    parallel(std::min<int64_t>(nth, std::max<int64_t>(n, 1)), [&](int t, int) {
        for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) task(i, t);
    });
}

}  // namespace tl
