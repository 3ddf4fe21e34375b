"""COCO-format data: synthetic generator, loading, validation, transforms, batching."""
