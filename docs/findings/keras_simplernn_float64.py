"""Keras 3 on JAX: a float64 SimpleRNN with tanh fails with a TypeError on every call.

cellbench finding keras-simplernn-float64-typeerror (docs/findings/keras.md). Needs only keras, jax
and numpy:  python docs/findings/keras_simplernn_float64.py
Prints what it finds, then PRESENT or ABSENT; exits 0 either way.

The cell's new state is keras.ops.tanh(...), which Keras computes in float32 for a float64 tensor
(finding keras-float64-tanh-in-float32), so the state that lax.scan carries comes back float32
where it went in float64, and jax.lax.scan rejects the loop. SimpleRNN(activation="relu") works.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 arrays in JAX at all

import keras  # noqa: E402
import numpy as np  # noqa: E402


def main():
    print(f"keras {keras.__version__} on {keras.backend.backend()}, jax {jax.__version__}")
    x = np.random.default_rng(0).standard_normal((2, 3, 4))  # (B, T, I), float64
    present = False
    for activation in ("tanh", "relu"):
        try:
            out = keras.layers.SimpleRNN(5, activation=activation, dtype="float64")(x)
            print(f"SimpleRNN(activation={activation!r}, dtype='float64'): output {out.dtype} {tuple(out.shape)}")
        except TypeError as error:
            present = present or activation == "tanh"
            lines = [line for line in str(error).splitlines() if "carry" in line]
            print(f"SimpleRNN(activation={activation!r}, dtype='float64'): TypeError: {lines[-1].strip() if lines else error}")
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    main()
