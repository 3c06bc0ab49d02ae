"""Training-stage machinery, for every method: where a stage's networks come from
(chain.py), the recipe of each round (rounds.py), the run itself (run.py), what a
finished stage writes (results.py, outputs.py), its live log (live.py) and the
convergence measure (convergence.py). `lowbit.stages` holds the stages: each is
`run(cfg) = run_stage(cfg, <its method>)`.

Importing this package is light; `from lowbit.training.run import run_stage` loads torch.
"""
