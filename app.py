"""Start the ProLab Explorer app: ``python app.py [--help]``."""
import time

_STARTED = time.perf_counter()

# `import prolab` (through app.main) sets OpenMP's wait policy before torch loads: prolab/threads.py.
from app.main import main  # noqa: E402

if __name__ == "__main__":
    main(started=_STARTED)
