"""Moved to :mod:`blendseg.dist` (below modeling/, data/ and evaluation/, which use its reductions); these names
stay importable from here for one release. Patch :mod:`blendseg.dist` itself, not this module."""

from ..dist import (  # noqa: F401
    agree,
    all_reduce,
    backend,
    barrier,
    cleanup,
    comm_device,
    gather_objects,
    get_rank,
    get_world_size,
    init_from_env,
    is_dist,
    is_main_process,
    process_device,
    reduce_mean,
    resolve_device,
)
