"""What fake quantization costs a training step (issue 8): lowbit vs FP and peers.

One train step = forward + loss + backward + SGD step (Nesterov, the engine's own
`CrossEntropy` objective and `optimizer_step`; a GradScaler under fp16), CIFAR
ResNet-20 (10 classes) on one fixed random batch of 32x32 images. Each network runs in
every execution a user would train it with, through `engine.make_trainee` and
`engine.Execution`: eager and compiled (`model.compile()`), each in fp32 and in the
device's mixed precision (bf16 autocast on the CPU, fp16 + GradScaler on CUDA), all
channels_last; plus FP fp32 in NCHW, the old default layout, for reference.

Networks (variants.py): fp; lowbit_w4a4, lowbit_w2a2 (`quantize(model, w_bits, a_bits)`,
paper §3.1 quantizers); lowbit_w2a2_sp (stochastic precision, paper §3.3, through the
method's hook with p = 0.5 per layer: gate tensors when compiled, as the stage does);
lowbit_w2a2_kd (one joint-distillation step, paper §4: FP teacher + W2A2 student,
total and per network); brevitas_w2a2 (if installed: brevitas QuantConv2d and
QuantReLU at 2 bits where lowbit quantizes) and torch_ao_qat (eager prepare_qat,
fbgemm int8 fake quantization; fp32 only, its fused fake-quant refuses bf16/fp16).

Ratios: every row against the fastest FP row on the device (whichever execution that
is: compare always with the fastest FP path a user could run), and against the FP row
in its own execution (like for like).

Time (timing.py): all rows live in one process and are stepped in turn, the order
rotated each repetition, so machine noise hits them alike; we report the median and
the inter-quartile range (IQR, q75 - q25) of per-step wall time after warm-up, and
beside them the fastest step (min) and the median process CPU time (all threads),
which suffer less when other jobs compete for the cores. A compiled row's first step
compiles: it is excluded (reported as "1st step s") and followed by extra warm-up steps.
On CUDA each step is bracketed by a synchronize.

Memory (memory.py): a fresh subprocess per row (one for all in quick mode or with
--one-memory-process); peak MB = the tensors a row keeps between steps + what one step
adds at its peak (RSS on the CPU, the CUDA allocator's counters on CUDA).
"""

from lowbit.bench.overhead.memory import measure_memory, memory_main
from lowbit.bench.overhead.run import OverheadSpec, resolve_device, run_overhead
from lowbit.bench.overhead.timing import summary
from lowbit.bench.overhead.variants import MODELS, PEERS, Variant, catalog, select

__all__ = [
    "MODELS", "PEERS", "OverheadSpec", "Variant", "catalog", "measure_memory",
    "memory_main", "resolve_device", "run_overhead", "select", "summary",
]  # fmt: skip
