"""blendseg: BlendMask, YOLACT/YOLACT++ and MEInst in pure PyTorch on a shared FCOS core."""

from .api import Model, load, train
from .inference.result import Result

__version__ = "0.1.0"
__all__ = ["Model", "Result", "load", "train", "__version__"]
