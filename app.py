"""Start the ProLab Explorer app: ``python app.py [--help]``."""
import os
import time

_STARTED = time.perf_counter()
# Set before torch loads OpenMP (override by setting it yourself). With the default (spin, then sleep),
# on a machine busier than its cores every small parallel operation waits for descheduled threads:
# re-scoring an evaluation (Evaluate tab, MSRC-v2 val) took 13.8 s instead of 1.1 s at load 6 on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from app.main import main  # noqa: E402

if __name__ == "__main__":
    main(started=_STARTED)
