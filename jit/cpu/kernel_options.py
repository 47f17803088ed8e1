"""The Numba options of every jit.cpu time-loop kernel (jit.cpu.lstm, gru, rnn), in one place.

- cache: compiled kernels go to the on-disk cache (jit.cpu.cache picks the folder).
- nogil: jit.cpu.backend runs one kernel call per thread, in parallel.
- error_model="numpy": Numba's default checks each float division for zero in order to
  raise ZeroDivisionError, and that branch keeps LLVM from vectorising the pointwise pass.
  Every denominator here is at least 1 (1 + e^{−|a|}), so nothing is lost, and the pointwise
  pass runs 1.6–3× faster (measured: 57 → 19 ns per lstm unit in float32).
- fastmath={"contract"}: only fused multiply-adds (a·b + c rounded once instead of twice),
  no reassociation, no assumption about NaN or infinities. The pointwise passes are chains
  of such terms (the exp's polynomial, f⊙c + i⊙g) and ran 1.9× faster with them (measured:
  lstm forward pointwise 20 → 10.6 ns per unit, float32). The rounding differs from the
  reference's by at most one rounding per term, which the property suite's derived
  tolerances (agreement with the reference in both dtypes) bound; the contraction is chosen
  at compile time, so results stay deterministic.
"""

KERNEL_OPTIONS = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
