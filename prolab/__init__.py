"""ProLab Explorer: property-level label spaces and segmentation (Xiao et al., ECCV 2024)."""
from prolab.threads import set_wait_policy

# Before anything imports torch: OpenMP reads its wait policy once, when torch loads it (prolab.threads).
set_wait_policy()

from prolab.errors import ProLabError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ProLabError", "__version__"]
