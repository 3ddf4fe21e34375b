"""The methods on the core, one module group each; a method imports :mod:`blendseg.modeling.core`, never another
method. BlendMask: ``blendmask`` (attentions, blender, losses), ``blendmask_bottom`` (the bases' bottom modules),
``blendmask_panoptic`` (the semantic FPN head and the panoptic merge). MEInst: ``meinst``. YOLACT / YOLACT++:
``yolact`` (protonet, prediction head, Fast NMS, re-scoring), ``yolact_loss`` (matching, OHEM and the mask loss)."""
