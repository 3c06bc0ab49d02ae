"""`python -m lowbit.cli …`: the `lowbit` command (SLURM tests and jobs call it this way)."""

import sys

from lowbit.cli import main

sys.exit(main())
