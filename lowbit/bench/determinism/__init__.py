"""Are training stages bitwise reproducible across processes? Run a stage several times
from identical inputs in perturbed processes (runs), compare the outputs (compare), write
reports/bench/determinism.md (report). CLI: scripts/determinism.py."""
