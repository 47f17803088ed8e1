"""Third-party frameworks as cellbench backends: each module is a backend under the contract.

    adapters.onnxruntime   ONNX RNN / LSTM / GRU nodes run by onnxruntime (forward only, float32)
    adapters.keras         Keras 3 SimpleRNN / LSTM / GRU on the JAX backend, backward through jax.vjp
    adapters.flax          flax.linen SimpleCell / LSTMCell / GRUCell, backward through jax.vjp

An adapter converts PyTorch-layout params to its framework's layout and calls the framework; it
never corrects what the framework returns. What the suite found wrong in a framework is listed
in docs/findings.md and declared by the adapter as ``known_defects`` (see adapters.known).
"""
