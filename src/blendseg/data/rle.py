"""Moved to :mod:`blendseg.ops.rle` (pure mask functions, below data/); importable from here for one release."""

from ..ops.rle import area, decode, encode, mask_api, rasterize_polygons_in_box, segm_to_rle, to_bbox  # noqa: F401
