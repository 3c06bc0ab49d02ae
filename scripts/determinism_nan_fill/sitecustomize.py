"""Imported at start-up by every Python process with this folder on PYTHONPATH
(scripts/determinism.py --nan-fill puts it there for every other run): every tensor
ATen allocates without initialising it (torch.empty, empty_like, and the C++
extension's at::empty_like) is filled with NaN (integers: their largest value). A kernel
that reads memory before writing it then sees NaN instead of what the allocator left
there, so its run differs from an unfilled one."""

import torch

# the fill is part of torch's deterministic mode; warn_only: operations without a
# deterministic implementation still run (and warn), as in a normal run
torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True
