"""lowbit: train CNNs with low-bitwidth weights and activations.

Implements Zhuang et al., "Effective Training of Convolutional Neural Networks with
Low-bitwidth Weights and Activations" (IEEE TPAMI 2022): DoReFa-style quantizers,
progressive quantization, stochastic precision and joint knowledge distillation.
"""

__version__ = "0.1.0"
