"""Training-stage machinery, for every method: where a stage's networks come from
(chain.py), the recipe of each round (rounds.py), the run itself (run.py), what a
finished stage writes (results.py, outputs.py), its live log (live.py) and the
convergence measure (convergence.py). A training stage is `run_stage(cfg, <its method>)`,
its method named by its row of the table of stages (lowbit.config.sections.STAGES).

Importing this package is light; `from lowbit.training.run import run_stage` loads torch.
"""
