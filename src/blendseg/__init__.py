"""blendseg: BlendMask, YOLACT/YOLACT++ and MEInst in pure PyTorch on a shared FCOS core."""

__version__ = "0.1.0"
