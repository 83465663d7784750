"""ProLab Explorer: property-level label spaces and segmentation (Xiao et al., ECCV 2024)."""
from prolab.errors import ProLabError

__version__ = "0.1.0"
__all__ = ["ProLabError", "__version__"]
