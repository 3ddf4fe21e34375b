"""blendseg: BlendMask, YOLACT/YOLACT++ and MEInst in pure PyTorch on a shared FCOS core."""

from .api import Model, load, train
from .inference.result import Result
from .zoo import get_preset, list_presets

__version__ = "0.1.0"
__all__ = ["Model", "Result", "get_preset", "list_presets", "load", "train", "__version__"]
