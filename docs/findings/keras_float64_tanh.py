"""Keras 3 on JAX computes tanh in float32 for float64 tensors, so float64 LSTM and GRU layers are
wrong by ~1e-8 (float32's rounding) where float64's is ~1e-16.

cellbench finding keras-float64-tanh-in-float32 (docs/findings/keras.md). Needs only keras, jax and
numpy:  python docs/findings/keras_float64_tanh.py
Prints what it finds, then PRESENT or ABSENT; exits 0 either way.

keras.ops.tanh casts its input to keras.backend.result_type(x.dtype, float), and result_type maps
float64 to float32 on every backend but TensorFlow (keras/src/backend/common/dtypes.py,
BIT64_TO_BIT32_DTYPE), whether or not JAX's 64-bit mode is on. An LSTM's tanh(c) and g, a GRU's
candidate n, go through it; the float32 result is then promoted back to float64 by the next
product, so the layer returns float64 arrays carrying float32 errors.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 arrays in JAX at all

import keras  # noqa: E402
import numpy as np  # noqa: E402

T, B, I, H = 6, 4, 3, 5


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def numpy_lstm(x, kernel, recurrent, bias):
    """Keras' LSTM equations in float64 NumPy: gates i, f, c, o side by side in the kernels."""
    h = c = np.zeros((x.shape[0], H))
    hs = []
    for t in range(x.shape[1]):
        a = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, axis=1)


def main():
    print(f"keras {keras.__version__} on {keras.backend.backend()}, jax {jax.__version__}")
    a = np.linspace(-3, 3, 7)
    y = keras.ops.tanh(keras.ops.convert_to_tensor(a, dtype="float64"))
    print(f"keras.ops.tanh of a float64 tensor: dtype {y.dtype}, worst error {np.abs(np.asarray(y, np.float64) - np.tanh(a)).max():.2e}")

    rng = np.random.default_rng(0)
    layer = keras.layers.LSTM(H, return_sequences=True, dtype="float64")
    x = rng.standard_normal((B, T, I))
    hs = np.asarray(layer(x))
    kernel, recurrent, bias = (np.asarray(v.value) for v in layer.weights)
    error = np.abs(hs - numpy_lstm(x, kernel, recurrent, bias)).max()
    print(f"LSTM(dtype='float64'): output dtype {hs.dtype}, worst |h − float64 NumPy| = {error:.2e} "
          f"(float64 rounding would be ~1e-16, float32's ~6e-8)")
    present = y.dtype != np.float64 or error > 1e-12
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    main()
