"""Benchmarks: accuracy, speed, robustness and fault scripts, each run from the repository root
as a module, `python -m benchmarks.NAME --help`; their JSON is in benchmarks/results/.

Imported before any benchmark imports torch, so every benchmark's OpenMP threads wait
passively (they share the cores with other work) unless OMP_WAIT_POLICY says otherwise.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
