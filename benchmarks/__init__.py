"""Benchmarks, not tests: each module measures something side by side in one run and prints (or writes) the table
that docs/benchmarks/ quotes with its command. Run them from the checkout's root as ``python -m benchmarks.NAME``
(``--help`` describes each); they import each other through this package, never through ``sys.path``. Not installed
with blendseg."""
