"""The device check's parts (scripts/gpu_check.py runs them; see its docstring).

carry.py      what travels: pinned wheels and a CIFAR-10 subset, the carry list
driver.py     the steps in child processes, each under its own time cap; the report
record.py     a step's checks (PASS / FAIL with numbers), saved after each one
report.py     gpu-check.md from the steps' records
setup.py      the carried wheels installed offline; what the machine is
quant.py      CUDA quantizers and layers against the CPU reference; fp16 / bf16 levels
steptime.py   step time: FP and W2A2, eager and compiled, fp32 and bf16
training.py   real training on the subset: accuracy floor, eager vs compiled, resume
ddp.py        two ranks: parameters equal after DoReFa, LSQ, SP and KD steps
"""
