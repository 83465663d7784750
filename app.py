"""Start the ProLab Explorer app: ``python app.py [--help]``."""
import time

_STARTED = time.perf_counter()

from app.main import main  # noqa: E402

if __name__ == "__main__":
    main(started=_STARTED)
