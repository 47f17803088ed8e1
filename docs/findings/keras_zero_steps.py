"""Keras 3 on JAX: a recurrent layer given zero time steps fails with an IndexError from inside its
loop, instead of returning the initial state (or refusing the input with a message that says so).

cellbench finding keras-zero-steps-indexerror (docs/findings/keras.md). Needs only keras, jax and
numpy:  python docs/findings/keras_zero_steps.py
Prints what it finds, then PRESENT or ABSENT; exits 0 either way.

keras/src/backend/jax/rnn.py takes ``last_output = outputs[-1]`` of the scanned outputs, which has
no element when T = 0. After no step the state is the initial one, as torch.nn's functional
definition and cellbench's contract have it.
"""
import os
import re

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

B, I, H = 2, 3, 4


def main():
    print(f"keras {keras.__version__} on {keras.backend.backend()}, jax {jax.__version__}")
    x = np.zeros((B, 0, I), np.float32)  # (B, T = 0, I)
    h0 = np.full((B, H), 0.5, np.float32)
    present = False
    for layer, state in ((keras.layers.SimpleRNN(H, return_state=True), [h0]),
                         (keras.layers.LSTM(H, return_state=True), [h0, -h0]),
                         (keras.layers.GRU(H, return_state=True), [h0])):
        try:
            _, *last = layer(x, initial_state=state)
            same = all(np.array_equal(np.asarray(got), given) for got, given in zip(last, state))
            print(f"{type(layer).__name__} with T = 0: returned the state, {'equal' if same else 'NOT equal'} "
                  f"to the initial one")
            present = present or not same
        except IndexError as error:
            present = True
            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Keras styles its messages for a terminal
            cause = [line.strip() for line in plain.splitlines() if "out of bounds" in line]
            print(f"{type(layer).__name__} with T = 0: IndexError: {(cause or [str(error)])[0][:100]}")
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    main()
