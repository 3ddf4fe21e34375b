"""Model modules, in two parts:

- :mod:`~blendseg.modeling.core`: what every method shares. The backbones behind one table (ResNet, DLA-34,
  DarkNet-53: named feature maps with strides and channels), the FPN, and the FCOS detector (head, assignment +
  loss, decoding) with its one extension point, the ``embed_head`` that a method hangs on a tower.
- :mod:`~blendseg.modeling.methods`: one module group per method, each importing the core and never another method.
  BlendMask (``blendmask``: the top layer and the blender; ``blendmask_bottom``: the bases; ``blendmask_panoptic``:
  the semantic FPN head of the panoptic extension), MEInst (``meinst``) and YOLACT / YOLACT++ (``yolact``,
  ``yolact_loss``).
"""
