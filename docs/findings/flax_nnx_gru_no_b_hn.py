"""flax.nnx.GRUCell has no b_hn: its candidate is n = tanh(W_in x + b_in + r⊙(W_hn h)), although its
docstring (and flax.linen.GRUCell, and PyTorch) have n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn)).

cellbench finding flax-nnx-grucell-no-b-hn (docs/findings/flax.md). Needs only flax, jax and numpy:
python docs/findings/flax_nnx_gru_no_b_hn.py
Prints what it finds, then PRESENT or ABSENT; exits 0 either way.

nnx.GRUCell holds one Linear for the input (3H outputs, with a bias) and one for the state (3H
outputs, use_bias=False), so a GRU trained with b_hn (every torch.nn.GRU, every flax.linen.GRUCell)
cannot be loaded into it: b_hn sits inside the reset product, where no other parameter reaches.
The check: copy a flax.linen.GRUCell's params into an nnx.GRUCell, with b_hn = 0 (the two agree)
and b_hn ≠ 0 (they differ by the missing r⊙b_hn inside tanh).
"""
import flax
import flax.linen as linen
import jax
import numpy as np
from flax import nnx

B, I, H = 2, 3, 4


def main():
    print(f"flax {flax.__version__}, jax {jax.__version__}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, I)).astype(np.float32)
    h = (0.5 * rng.standard_normal((B, H))).astype(np.float32)
    cell = nnx.GRUCell(I, H, rngs=nnx.Rngs(0))
    has_b_hn = getattr(cell.dense_h, "bias", None) is not None
    print(f"nnx.GRUCell's state Linear has a bias: {has_b_hn}")

    linen_cell = linen.GRUCell(H)
    params = linen_cell.init(jax.random.key(0), h, x)["params"]
    w = {name: {k: np.asarray(v) for k, v in p.items()} for name, p in params.items()}
    # nnx's input Linear holds ir, iz, in side by side (bias b_ir, b_iz, b_in); its state Linear hr, hz, hn
    cell.dense_i.kernel.value = np.concatenate([w[g]["kernel"] for g in ("ir", "iz", "in")], axis=1)
    cell.dense_i.bias.value = np.concatenate([w[g]["bias"] for g in ("ir", "iz", "in")])
    cell.dense_h.kernel.value = np.concatenate([w[g]["kernel"] for g in ("hr", "hz", "hn")], axis=1)
    differences = []
    for b_hn in (0.0, 0.5):
        w["hn"]["bias"] = np.full(H, b_hn, np.float32)
        params = {name: dict(p) for name, p in w.items()}
        if has_b_hn:
            cell.dense_h.bias.value = np.concatenate([np.zeros(2 * H, np.float32), w["hn"]["bias"]])
        linen_h, _ = linen_cell.apply({"params": params}, h, x)
        nnx_h, _ = cell(h, x)
        differences.append(float(np.abs(np.asarray(linen_h) - np.asarray(nnx_h)).max()))
        print(f"b_hn = {b_hn}: max |linen.GRUCell − nnx.GRUCell| = {differences[-1]:.3g}")
    present = not has_b_hn and differences[1] > 1e-3
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    main()
