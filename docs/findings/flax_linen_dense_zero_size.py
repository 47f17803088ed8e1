"""flax.linen.Dense cannot be applied with no input features or no outputs, even to params it is
given: applying it evaluates its kernel initializer, and jax's variance-scaling initializers
(lecun_normal, Dense's default; glorot_*, he_*) divide by the zero fan: ZeroDivisionError.

cellbench finding flax-linen-dense-zero-size (docs/findings/flax.md). Needs only flax, jax and
numpy:  python docs/findings/flax_linen_dense_zero_size.py
Prints what it finds, then PRESENT or ABSENT; exits 0 either way.

A (B, 0) @ (0, N) product is a valid empty sum (jnp gives zeros), and a recurrent cell with no input
features (I = 0) runs on its state alone; so flax.linen's SimpleCell, LSTMCell and GRUCell, built
from Dense, cannot run a cell with I = 0 or H = 0 from given params. The same Dense with
kernel_init=zeros applies; so it is the initializer, evaluated where the params are already given.
"""
import flax
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np

B, I, H = 2, 3, 4


def outcome(call) -> str:
    try:
        result = call()
    except ZeroDivisionError as error:
        return f"ZeroDivisionError: {error}"
    shapes = [np.shape(a) for a in jax.tree_util.tree_leaves(result)]
    return f"returned shapes {shapes}"


def dense_apply(n_in, n_out, **options):
    params = {"params": {"kernel": jnp.zeros((n_in, n_out)), "bias": jnp.zeros(n_out)}}
    return lambda: linen.Dense(n_out, **options).apply(params, jnp.zeros((B, n_in)))


def lstm_apply(n_in, n_hidden):
    """An LSTMCell applied to params it is given (every Dense's kernel and bias of the right shape)."""
    params = {f"i{g}": {"kernel": jnp.zeros((n_in, n_hidden))} for g in "ifgo"}
    params.update({f"h{g}": {"kernel": jnp.zeros((n_hidden, n_hidden)), "bias": jnp.zeros(n_hidden)} for g in "ifgo"})
    carry = (jnp.zeros((B, n_hidden)), jnp.zeros((B, n_hidden)))
    return lambda: linen.LSTMCell(n_hidden).apply({"params": params}, carry, jnp.zeros((B, n_in)))


def main():
    print(f"flax {flax.__version__}, jax {jax.__version__}")
    cases = {
        f"Dense({H}) applied to given params, {I} inputs (control)": dense_apply(I, H),
        f"Dense({H}) applied to given params, 0 inputs": dense_apply(0, H),
        "Dense(0) applied to given params, 3 inputs": dense_apply(I, 0),
        f"Dense({H}, kernel_init=zeros), 0 inputs": dense_apply(0, H, kernel_init=linen.initializers.zeros),
        f"LSTMCell({H}) applied to given params, 0 inputs": lstm_apply(0, H),
        "LSTMCell(0) applied to given params, 3 inputs": lstm_apply(I, 0),
        "jax.nn.initializers.lecun_normal()(key, (0, 4))":
            lambda: jax.nn.initializers.lecun_normal()(jax.random.PRNGKey(0), (0, H)),
        "jnp.zeros((2, 0)) @ jnp.zeros((0, 4)) (control)": lambda: jnp.zeros((B, 0)) @ jnp.zeros((0, H)),
    }
    present = False
    for label, call in cases.items():
        found = outcome(call)
        present = present or (found.startswith("ZeroDivisionError") and "control" not in label
                              and "kernel_init=zeros" not in label)
        print(f"{label}: {found}")
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    main()
