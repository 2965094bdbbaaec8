// The pool behind tl::parallel (thread_pool.h).
//
// One job at a time. The caller publishes the job (function, context, thread count) and bumps a
// generation counter under the pool's mutex, wakes the workers that sleep, runs tid 0 itself,
// then waits until the participating workers have counted themselves out. A worker remembers
// the last generation it saw, so it runs each job at most once and a job posted while it was
// still going back to sleep is not missed; the caller's wait for all participants before the
// next job makes back-to-back jobs safe.
//
// Waiting is spin-then-sleep. After a job, a worker watches the generation for a short window
// (spin_us(), 100 us by default) before it sleeps on the condition variable, and the caller
// watches the count of running workers for as long before it sleeps: a training step launches
// a kernel every few tens of microseconds, and waking a sleeping thread costs 5-50 us on a VM,
// which was ~25% of a 0.25 ms GEMM (768x128x384 on 2 threads: 246 GFLOP/s with sleeping
// waits against MKL's own spinning threads' 344). Past the window the cores are free again
// for BLAS, Python and anything else in the process. TENSORLITE_POOL_SPIN_US sets the window
// (0: always sleep, as before); by default nothing spins when there are more threads than CPUs.
#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace tl {
namespace {

thread_local bool in_job = false;  // a worker, or a caller running its part of a job

// The spin window in microseconds: TENSORLITE_POOL_SPIN_US (read once) or -1 when unset.
long spin_setting() {
    static const long us = [] {
        if (const char* s = std::getenv("TENSORLITE_POOL_SPIN_US")) {
            char* end = nullptr;
            const long v = std::strtol(s, &end, 10);
            if (end != s && v >= 0) return std::min<long>(v, 100000);
        }
        return -1L;
    }();
    return us;
}
long spin_us() { return spin_setting() < 0 ? 100 : spin_setting(); }

// True as soon as done() holds, false once the spin window has passed without it. spin is
// false when the pool has more threads than the process has CPUs (a spinning thread would
// take time slices from the threads doing the work), unless TENSORLITE_POOL_SPIN_US asks.
template <class Done>
bool spin_until(Done done, bool spin) {
    const long us = spin ? spin_us() : 0;
    if (us == 0) return done();
    const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
    for (int i = 1;; ++i) {
        if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
        _mm_pause();
#else
        std::this_thread::yield();
#endif
        if (i % 64 == 0 && std::chrono::steady_clock::now() > end) return done();
    }
}

struct Pool {
    std::mutex submit;  // held by the caller for a whole job: jobs never overlap
    std::mutex m;       // guards the members below it that are not atomic
    std::condition_variable wake, done;
    // Written under m; watched without it by spinning threads, which then read the job
    // (generation, fn, ctx, nth together) under m.
    std::atomic<uint64_t> generation{0};
    std::atomic<int> pending{0};  // participating workers still running the current job
    std::atomic<bool> stop{false};
    detail::JobFn fn = nullptr;
    void* ctx = nullptr;
    int nth = 1;
    int sleepers = 0;             // workers waiting on `wake`
    bool caller_sleeping = false; // the caller waits on `done`
    bool spin = true;             // set by start_workers: no more threads than CPUs
    std::exception_ptr error;
    std::vector<std::thread> workers;  // worker i is tid i + 1

    void work(int tid, uint64_t seen) {
        in_job = true;
        for (;;) {
            auto posted = [&] {
                return stop.load(std::memory_order_acquire) ||
                       generation.load(std::memory_order_acquire) != seen;
            };
            const bool spun = spin_until(posted, spin);
            detail::JobFn f;
            void* c;
            int n;
            {
                // The job is read under the lock it was posted under: a job narrower than the
                // pool does not wait for this worker, so the next one may be posted while a
                // worker that sat this one out is here; generation and job must match.
                std::unique_lock<std::mutex> lk(m);
                if (!spun) {
                    ++sleepers;
                    wake.wait(lk, posted);
                    --sleepers;
                }
                if (stop.load(std::memory_order_relaxed)) return;
                seen = generation.load(std::memory_order_relaxed);
                f = fn, c = ctx, n = nth;
            }
            if (tid >= n) continue;  // a job narrower than the pool
            std::exception_ptr e;
            try {
                f(c, tid, n);
            } catch (...) {
                e = std::current_exception();
            }
            if (e) {
                std::lock_guard<std::mutex> lk(m);
                if (!error) error = e;
            }
            if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {  // the last one out
                std::lock_guard<std::mutex> lk(m);
                if (caller_sleeping) done.notify_one();
            }
        }
    }

    // Called with `submit` held, so no job is running.
    void stop_workers() {
        {
            std::lock_guard<std::mutex> lk(m);
            stop.store(true, std::memory_order_release);
        }
        wake.notify_all();
        for (auto& t : workers) t.join();
        workers.clear();
        stop.store(false, std::memory_order_release);
    }

    // Up to n workers; fewer if the system refuses threads (then jobs are narrower).
    void start_workers(int n) {
        // Workers take no signals: Python's handlers run on the main thread, and a signal
        // landing on a worker would only delay it.
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        workers.reserve(n);
        spin = n + 1 <= num_procs() || spin_setting() >= 0;
        const uint64_t gen = generation.load(std::memory_order_relaxed);
        for (int i = 0; i < n; ++i) {
            try {
                workers.emplace_back([this, i, gen] { work(i + 1, gen); });
            } catch (...) {
                break;
            }
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
};

// Heap-allocated and never freed: joining threads from a static destructor at exit can hang,
// and after fork() the child must drop (not destroy) a pool whose threads it does not have.
std::mutex g_lock;  // guards g_pool
Pool* g_pool = nullptr;
std::atomic<int> g_threads{0};  // 0: not read from the environment yet

void before_fork() {
    g_lock.lock();
    if (g_pool) g_pool->submit.lock();  // waits out a job running on another thread
}
void after_fork_parent() {
    if (g_pool) g_pool->submit.unlock();
    g_lock.unlock();
}
void after_fork_child() {
    // Only the forking thread exists here; the pool's workers did not come along. The locks
    // were taken by this thread in before_fork, so releasing them is well defined.
    if (g_pool) g_pool->submit.unlock();
    g_pool = nullptr;  // leaked: its std::thread objects must not be joined or destroyed
    g_lock.unlock();
}

Pool* pool() {
    std::lock_guard<std::mutex> lk(g_lock);
    if (!g_pool) {
        static const bool registered =
            pthread_atfork(before_fork, after_fork_parent, after_fork_child) == 0;
        (void)registered;
        g_pool = new Pool;
    }
    return g_pool;
}

int default_threads() {
    // Like libgomp: the first number of OMP_NUM_THREADS (it may be a list, "4,2").
    if (const char* s = std::getenv("OMP_NUM_THREADS")) {
        char* end = nullptr;
        const long v = std::strtol(s, &end, 10);
        if (end != s && v >= 1) return int(std::min<long>(v, 1 << 12));
    }
    return num_procs();
}

}  // namespace

int num_procs() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    const unsigned hw = std::thread::hardware_concurrency();
    return hw ? int(hw) : 1;
}

int max_threads() {
    int n = g_threads.load(std::memory_order_relaxed);
    if (n == 0) {
        int zero = 0;
        n = default_threads();
        if (!g_threads.compare_exchange_strong(zero, n)) n = zero;
    }
    return n;
}

void set_max_threads(int n) {
    n = std::max(n, 1);
    g_threads.store(n, std::memory_order_relaxed);
    // Fewer threads: let the extra workers go now (set_num_threads(1) leaves none behind).
    // More: started by the next job that needs them.
    Pool* p;
    {
        std::lock_guard<std::mutex> lk(g_lock);
        p = g_pool;
    }
    if (!p || in_job) return;
    std::lock_guard<std::mutex> job(p->submit);
    if (int(p->workers.size()) > n - 1) p->stop_workers();
}

namespace detail {

void run_job(int nth, JobFn fn, void* ctx) {
    if (in_job || nth <= 1) {  // nested: run inline, as nested OpenMP regions did
        fn(ctx, 0, 1);
        return;
    }
    Pool* p = pool();
    std::lock_guard<std::mutex> job(p->submit);
    // Sized for the thread setting (so set_num_threads takes effect here, between jobs), and
    // for this job if it asks for more.
    const int want = std::max(nth, max_threads()) - 1;
    if (int(p->workers.size()) != want) {
        p->stop_workers();
        p->start_workers(want);
    }
    nth = std::min<int>(nth, int(p->workers.size()) + 1);
    if (nth <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    bool sleeping;
    {
        std::lock_guard<std::mutex> lk(p->m);
        p->fn = fn, p->ctx = ctx, p->nth = nth;
        p->pending.store(nth - 1, std::memory_order_relaxed);
        p->error = nullptr;
        p->generation.fetch_add(1, std::memory_order_release);
        sleeping = p->sleepers > 0;  // spinning workers see the generation by themselves
    }
    if (sleeping) p->wake.notify_all();
    std::exception_ptr mine;
    in_job = true;
    try {
        fn(ctx, 0, nth);
    } catch (...) {
        mine = std::current_exception();
    }
    in_job = false;
    std::exception_ptr theirs;
    auto finished = [&] { return p->pending.load(std::memory_order_acquire) == 0; };
    const bool spun = spin_until(finished, p->spin);
    {
        std::unique_lock<std::mutex> lk(p->m);
        if (!spun) {
            p->caller_sleeping = true;
            p->done.wait(lk, finished);
            p->caller_sleeping = false;
        }
        theirs = p->error;
        p->error = nullptr;
    }
    if (mine) std::rethrow_exception(mine);
    if (theirs) std::rethrow_exception(theirs);
}

}  // namespace detail
}  // namespace tl
