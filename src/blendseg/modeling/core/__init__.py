"""The shared core: backbones (``backbones`` is the table; ``resnet``, ``dla``, ``darknet``), the layers they share
(``layers``), the FPN, and the FCOS detector: ``fcos`` (modules and the extension point), ``fcos_types`` (the outputs
and targets core and methods exchange), ``fcos_loss`` (assignment + loss), ``fcos_inference`` (decoding and
postprocessing). ``fuse`` folds batch norms into convolutions for inference."""
