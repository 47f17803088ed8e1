"""Compile every jit.cuda kernel for the real CUDA target (sm_90) down to LLVM IR, without a GPU.

The CUDA simulator runs kernels as Python, so it cannot catch what only numba.cuda's compiler
sees: a type it cannot infer, a shared-array shape that is not a compile-time constant, a
float32 kernel promoted to float64 arithmetic by a stray Python literal. This check types and
lowers each kernel with numba.cuda's own pipeline (no driver, NVVM or NVRTC needed: it stops
before PTX), and fails if any float32 kernel contains a double-precision operation, or if a
kernel that synchronizes its grid would not be launched cooperatively (or one that does not would).

    NUMBA_ENABLE_CUDASIM=0 python -m jit.cuda.lowering_check [float32] [float64]   (default: both;
                                                                     exit status 1 on a failure)
"""
import re
import sys
import types

import numpy as np
from numba import cuda
from numba import types as nt
from numba.cuda import config as cuda_config


def kernel_signatures(nb):
    """{kernel: argument types} for one float type, with contiguous arrays as forward/backward pass them;
    the layers' per-direction views (a column block of a layer's output or its gradient) are 'A'. The
    per-step cell kernels take whole arrays and the step t, the layer kernels whole arrays and the
    scan step s (see jit.cuda.tiles and jit.cuda.layers), the split-K kernels
    the partial sums and the slice depth last (jit.cuda.split)."""
    from jit.cuda import elementwise, gru, lstm, matmul, rnn, tiles
    A3, A2, A1, flag, step = nb[:, :, ::1], nb[:, ::1], nb[::1], nt.boolean, nt.int64
    view3, lengths = nb[:, :, :], nt.int32[::1]
    rows = (lengths, step, flag)  # the layer kernels' lengths, scan step, reverse
    return {
        matmul.matmul: (A2, A2, A2, A1, flag, flag, flag),
        matmul.column_sums: (A2, A1),
        elementwise.copy2d: (A2, A2), elementwise.add2d: (A2, A2, A2), elementwise.fill2d: (A2, nb),
        elementwise.count_nonfinite: (nt.UniTuple(A1, 7), nt.int64[::1]),
        rnn.rnn_step_forward_kernel: (A3, step, A2, A3, A2, A1, flag, A3),
        rnn.rnn_layer_step_forward_kernel: (A3, *rows, A2, A3, A2, A2, A1, flag, A3, view3),
        rnn.rnn_forward_persistent_kernel: (A3, A2, A3, A2, A1, flag, A3, A2),
        rnn.rnn_forward_split_kernel: (A3, A2, A3, A2, A1, flag, A3, A2, A3, step),
        rnn.rnn_step_backward_kernel: (A2, A3, A2, flag, A3, step, A3, A2),
        rnn.rnn_layer_step_backward_kernel: (A2, A3, A2, flag, view3, *rows, A3, A3, A2),
        rnn.rnn_backward_persistent_kernel: (A2, A3, A3, A2, flag, A3, A3),
        rnn.rnn_backward_split_kernel: (A2, A3, A3, A2, flag, A3, A3, A3, step),
        lstm.lstm_step_forward_kernel: (A3, step, A2, A2, A3, A3, A2, A1, A3),
        lstm.lstm_layer_step_forward_kernel: (A3, *rows, A2, A3, A2, A2, A3, A2, A2, A1, A3, view3),
        lstm.lstm_forward_persistent_kernel: (A3, A2, A2, A3, A3, A2, A1, A3, A2, A2),
        lstm.lstm_forward_split_kernel: (A3, A2, A2, A3, A3, A2, A1, A3, A2, A2, A3, step),
        lstm.lstm_step_backward_kernel: (A2, A2, A3, A2, A3, A2, A3, step, A3, A2, A2),
        lstm.lstm_layer_step_backward_kernel: (A2, A2, A3, A2, A3, A2, view3, *rows, A3, A3, A2, A2),
        lstm.lstm_backward_persistent_kernel: (A2, A2, flag, A3, A3, A3, A3, A2, A2, A3, A3),
        lstm.lstm_backward_split_kernel: (A2, A2, flag, A3, A3, A3, A3, A2, A2, A3, A3, A3, step),
        gru.gru_step_forward_kernel: (A3, step, A2, A3, A2, A1, A3),
        gru.gru_layer_step_forward_kernel: (A3, *rows, A2, A3, A2, A2, A1, A3, view3),
        gru.gru_forward_persistent_kernel: (A3, A2, A3, A2, A1, A3, A2),
        gru.gru_forward_split_kernel: (A3, A2, A3, A2, A1, A3, A2, A3, step),
        gru.gru_step_backward_kernel: (A2, A3, A3, A3, A2, A3, step, A3, A3, A2),
        gru.gru_layer_step_backward_kernel: (A2, A3, A3, A3, A2, view3, *rows, A3, A3, A2),
        gru.gru_backward_persistent_kernel: (A2, A3, A3, A3, A3, A2, A3, A3, A3),
        gru.gru_backward_split_kernel: (A2, A3, A3, A3, A3, A2, A3, A3, A3, A3, step),
        gru.gru_classic_step_forward_rz_kernel: (A3, step, A2, A3, A2, A1, A3, A2),
        gru.gru_classic_layer_step_forward_rz_kernel: (A3, *rows, A2, A3, A2, A1, A3, A2),
        gru.gru_classic_step_forward_n_kernel: (A3, step, A2, A3, A2, A2, A1, A3),
        gru.gru_classic_layer_step_forward_n_kernel: (A3, *rows, A2, A3, A2, A2, A2, A1, A3, view3),
        gru.gru_classic_forward_persistent_kernel: (A3, A2, A3, A2, A1, A3, A2, A2),
        gru.gru_classic_step_backward_n_kernel: (A2, A3, A3, A2, step, A3, A3, A2, A3),
        gru.gru_classic_layer_step_backward_n_kernel: (A2, A3, A3, A2, *rows, A3, A3, A2, A3),
        gru.gru_classic_step_backward_rz_kernel: (A2, A3, A3, A2, A2, A3, step, A3, A3, A2),
        gru.gru_classic_layer_step_backward_rz_kernel: (A2, A3, A3, A2, A2, view3, *rows, A3, A3, A2),
        gru.gru_classic_backward_persistent_kernel: (A2, A3, A3, A3, A2, A3, A2, A3, A3, A3),
        tiles.start_bptt_kernel: (A2, view3, lengths, flag, A2),
        tiles.lstm_start_bptt_kernel: (A2, view3, lengths, flag, A2, A2, flag, A2),
    }


DOUBLE_OP = re.compile(r"\b(fadd|fmul|fsub|fdiv) (fast )?double\b")
#: The kernels whose grid synchronizes (grid.sync, in the kernel or a device function it calls):
#: numba must launch them cooperatively, which it decides from the compiled library
#: (``use_cooperative``); every other kernel must not be, or its grid would be held to what fits.
GRID_SYNCHRONIZING = ("_persistent_kernel", "_split_kernel")


def main(argv=None) -> int:
    wanted = (argv if argv is not None else sys.argv[1:]) or ["float32", "float64"]
    if cuda_config.ENABLE_CUDASIM:
        print("lowering_check: numba.cuda is the simulator here; run with NUMBA_ENABLE_CUDASIM=0", file=sys.stderr)
        return 2
    import numba.cuda.dispatcher as dispatcher
    from numba.cuda.compiler import compile_cuda

    if not cuda.is_available():
        # Device functions ask the current device for its compute capability; without a driver
        # there is none, so name the one we compile for (an H100's).
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    failures = 0
    for dtype, nb in ((np.float32, nt.float32), (np.float64, nt.float64)):
        if np.dtype(dtype).name not in wanted:
            continue
        for kernel, signature in kernel_signatures(nb).items():
            name = f"{kernel.py_func.__module__.removeprefix('jit.cuda.')}.{kernel.py_func.__name__}"
            try:
                result = compile_cuda(kernel.py_func, nt.void, signature, cc=(9, 0))
            except Exception as exc:  # report every kernel, not just the first
                failures += 1
                print(f"FAILED {np.dtype(dtype).name} {name}: {type(exc).__name__}: {exc}")
                continue
            doubles = len(DOUBLE_OP.findall(result.library.get_llvm_str()))
            grid_synchronizing = name.endswith(GRID_SYNCHRONIZING)
            if dtype is np.float32 and doubles:
                failures += 1
                print(f"FAILED {np.dtype(dtype).name} {name}: {doubles} double-precision operations")
            elif result.library.use_cooperative != grid_synchronizing:
                failures += 1
                print(f"FAILED {np.dtype(dtype).name} {name}: numba would launch it "
                      f"{'non-' if not result.library.use_cooperative else ''}cooperatively; its grid "
                      f"{'synchronizes' if grid_synchronizing else 'does not synchronize'}")
            else:
                print(f"ok {np.dtype(dtype).name} {name}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
