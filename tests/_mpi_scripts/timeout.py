"""Run under `mpiexec -n 2 ... timeout.py exit|hang SECONDS`: rank 1 leaves (a clean exit, so
the launcher does not kill the job for it) or hangs, and rank 0's next all_reduce must fail
with the timeout error after SECONDS instead of waiting forever."""
import sys
import time

import tensorlite as tl
import tensorlite.distributed as dist

mode, seconds = sys.argv[1], float(sys.argv[2])
dist.init_process_group("mpi", timeout=seconds)
t = tl.ones(3)
dist.all_reduce(t)  # both ranks are alive here
if dist.get_rank() == 1:
    if mode == "exit":
        sys.exit(0)
    time.sleep(3600)
t0 = time.monotonic()
try:
    dist.all_reduce(t)
except dist.DistBackendError as e:
    # the message on stdout too: the launcher may stop forwarding output as the job aborts
    print(f"rank 0 raised after {time.monotonic() - t0:.1f} s: {type(e).__name__}: {e}",
          flush=True)
    raise  # uncaught: the excepthook prints it and aborts the job
print("all_reduce returned: the timeout did not fire", flush=True)
