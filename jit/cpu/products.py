"""The products of the time loops: a register-tiled kernel on packed weights.

Every step multiplies a tile's batch rows by its part of a weight: h @ W_hhᵀ forward,
da @ W_hh backward, and before the loop x @ W_ihᵀ (project_inputs). All are a @ B, with
B's columns packed into *panels* of W columns (PANEL_VECTORS SIMD vectors), zero beyond
B's last column: panels[p, k, c] = B[k, p·W + c]. panel_tile keeps a register tile of
TILE_ROWS rows × one panel in vector registers (jit.cpu.host sizes it to the host's
registers and vector width):

    per k:  x_r = a[r, k] broadcast to a vector    (one load per row)
            acc[r][v] += x_r · panels[p, k, v-th vector]   (one vector load per vector)

the outer-product micro-kernel of BLIS/OpenBLAS, written as LLVM vector IR because LLVM
does not find it in scalar loops. One core of the Zen 3 guest, float32: 87–98 GFLOP/s at
16–64 rows, against 54–82 for OpenBLAS (docs/jit-cpu.md). Nothing here allocates per step.
twin: reference.affine.affine / affine_backward (the x Wᵀ and da W terms, without bias).
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

from .host import L2_BYTES, PANEL_VECTORS, TILE_ROWS, VECTOR_BYTES  # noqa: F401  (fixed per host: jit.cpu.host)
from .steps import gather_inputs, runs_direct

#: Panels that panel_product runs every row tile on before moving on. Its tails are written
#: for four: a one-row tile takes all four at once, a two-row tile two at a time.
PANEL_GROUP = 4


@intrinsic
def panel_tile(typingctx, a, r0, rows, panels, p0, n_panels, out):
    """out[r0 : r0 + rows, p0·W : (p0 + n_panels)·W] = a[r0 : r0 + rows] @ panels[p0 : p0 + n_panels].

    ``rows`` and ``n_panels`` are compile-time constants (rows · n_panels · PANEL_VECTORS
    accumulators, which must fit the vector registers with room for the loads). No bounds
    checks: panel_product checks the shapes once per call.
    """
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(n_panels, types.IntegerLiteral)
            and isinstance(a, types.Array) and isinstance(panels, types.Array) and isinstance(out, types.Array)
            and a.dtype == panels.dtype == out.dtype and isinstance(a.dtype, types.Float)):
        return None
    R, NP = rows.literal_value, n_panels.literal_value
    dtype = a.dtype
    lanes = VECTOR_BYTES * 8 // dtype.bitwidth
    signature = types.void(a, r0, rows, panels, p0, n_panels, out)

    def codegen(context, builder, sig, args):
        a_value, r0_value, _, panels_value, p0_value, _, out_value = args
        arrays = [context.make_array(ty)(context, builder, value)
                  for ty, value in ((a, a_value), (panels, panels_value), (out, out_value))]
        a_array, panels_array, out_array = arrays
        intp = context.get_value_type(types.intp)
        first_row = context.cast(builder, r0_value, sig.args[1], types.intp)
        first_panel = context.cast(builder, p0_value, sig.args[4], types.intp)
        K = cgutils.unpack_tuple(builder, a_array.shape)[1]
        vector = ir.VectorType(context.get_value_type(dtype), lanes)
        align = dtype.bitwidth // 8
        # llvm.fmuladd: one FMA where the target has them, a multiply and an add otherwise
        fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                                 f"llvm.fmuladd.v{lanes}f{dtype.bitwidth}")

        def index(n):
            return ir.Constant(intp, n)

        def vector_pointer(array_type, array, indices):
            return builder.bitcast(cgutils.get_item_pointer(context, builder, array_type, array, indices),
                                   vector.as_pointer())

        columns = [(q, v) for q in range(NP) for v in range(PANEL_VECTORS)]
        zero = ir.Constant(vector, [0.0] * lanes)
        # allocas in the entry block, promoted to registers by LLVM's mem2reg
        sums = [[cgutils.alloca_once_value(builder, zero) for _ in columns] for _ in range(R)]
        row_of = [builder.add(first_row, index(r)) for r in range(R)]
        panel_of = [builder.add(first_panel, index(q)) for q in range(NP)]
        undefined = ir.Constant(vector, ir.Undefined)
        broadcast = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        with cgutils.for_range(builder, K) as loop:
            k = loop.index
            weights = [builder.load(vector_pointer(panels, panels_array, [panel_of[q], k, index(v * lanes)]),
                                    align=align) for q, v in columns]
            for r in range(R):
                x = builder.load(cgutils.get_item_pointer(context, builder, a, a_array, [row_of[r], k]))
                xs = builder.shuffle_vector(builder.insert_element(undefined, x, index(0)), undefined, broadcast)
                for column, w in enumerate(weights):
                    total = sums[r][column]
                    builder.store(builder.call(fmuladd, [xs, w, builder.load(total)]), total)
        width = index(PANEL_VECTORS * lanes)
        for r in range(R):
            for column, (q, v) in enumerate(columns):
                first_column = builder.add(builder.mul(panel_of[q], width), index(v * lanes))
                builder.store(builder.load(sums[r][column]), vector_pointer(out, out_array, [row_of[r], first_column]),
                              align=align)
        return context.get_dummy_value()
    return signature, codegen


@register_jitable
def columns_per_panel(itemsize):
    """W, the columns per panel, for elements of ``itemsize`` bytes (plain Python or compiled)."""
    return PANEL_VECTORS * (VECTOR_BYTES // itemsize)


@njit(cache=True, error_model="numpy")
def panel_width(dtype_sample):
    """W, the columns per panel, for arrays of dtype_sample's dtype (an array)."""
    return columns_per_panel(dtype_sample.itemsize)


def panel_columns(units: int, dtype) -> int:
    """The columns of a product over ``units`` columns of B in ``dtype``: a whole number of panels
    (what product_columns gives for such panels), for sizing an output before any packing."""
    width = columns_per_panel(np.dtype(dtype).itemsize)
    return -(-units // width) * width


@njit(cache=True, error_model="numpy")
def product_columns(panels):
    """The columns of panel_product's output: a whole number of panels."""
    return panels.shape[0] * panels.shape[2]


@njit(cache=True, error_model="numpy")
def panel_product(a, panels, out):
    """out[:, :product_columns(panels)] = a (nb, K) @ B, for B (K, ·) packed as ``panels``.

    Rows go TILE_ROWS at a time, the rest in tail_tiles. The panels go in groups of
    PANEL_GROUP, each serving every row tile before the next, so a step reads B once from
    wherever it lives while a's rows, the smaller stream, stay in L1.
    """
    nb, K = a.shape
    n_panels, panel_K, W = panels.shape
    if panel_K != K or out.shape[0] < nb or out.shape[1] < n_panels * W or W != panel_width(out):
        raise ValueError("panel_product: shapes of a, panels and out do not match")
    if nb == 0:
        return  # nothing to write; and NumPy gives an empty array's axes zero strides
    if out.strides[1] != out.itemsize:
        raise ValueError("panel_product: out's rows must be contiguous")
    whole = nb - nb % TILE_ROWS  # rows in whole register tiles
    for p0 in range(0, n_panels, PANEL_GROUP):
        p1 = min(n_panels, p0 + PANEL_GROUP)
        for p in range(p0, p1):
            for r in range(0, whole, TILE_ROWS):
                panel_tile(a, r, TILE_ROWS, panels, p, 1, out)
        if whole < nb:
            tail_tiles(a, whole, panels, p0, p1, out)


@njit(cache=True, error_model="numpy")
def tail_tiles(a, r, panels, p0, p1, out):
    """panel_product for a's rows r … (fewer than TILE_ROWS) on panels p0 … p1 − 1: tiles of
    4 rows, 2 and 1, the two smallest on two or four panels at once, so that each still has
    eight or more independent sums (except in a last group of fewer than PANEL_GROUP panels)."""
    nb = a.shape[0]
    whole_group = p1 - p0 == PANEL_GROUP
    if nb - r >= 4:
        for p in range(p0, p1):
            panel_tile(a, r, 4, panels, p, 1, out)
        r += 4
    if nb - r >= 2:
        if whole_group:
            panel_tile(a, r, 2, panels, p0, 2, out)
            panel_tile(a, r, 2, panels, p0 + 2, 2, out)
        else:
            for p in range(p0, p1):
                panel_tile(a, r, 2, panels, p, 1, out)
        r += 2
    if nb > r:
        if whole_group:
            panel_tile(a, r, 1, panels, p0, 4, out)
        else:
            for p in range(p0, p1):
                panel_tile(a, r, 1, panels, p, 1, out)


@intrinsic
def transpose_block(typingctx, w, row0, k0, panels, p, c0):
    """panels[p, k0 + i, c0 + j] = w[row0 + j, k0 + i] for i, j < n, the lanes of one SIMD vector:
    an n × n block of w transposed in vector registers.

    n rows of w are loaded as n vectors, and log2(n) rounds of interleaving (vector 2i takes
    the low halves of vectors i and i + n/2 in turn, vector 2i + 1 the high halves) leave
    vector i holding column i: the perfect-shuffle transpose. No bounds checks: pack_rows
    calls it on whole blocks only, with w's rows contiguous.
    """
    if not (isinstance(w, types.Array) and isinstance(panels, types.Array) and w.dtype == panels.dtype
            and isinstance(w.dtype, types.Float)):
        return None
    dtype = w.dtype
    n = VECTOR_BYTES * 8 // dtype.bitwidth
    signature = types.void(w, row0, k0, panels, p, c0)

    def codegen(context, builder, sig, args):
        w_value, row0_value, k0_value, panels_value, p_value, c0_value = args
        w_array = context.make_array(w)(context, builder, w_value)
        panels_array = context.make_array(panels)(context, builder, panels_value)
        intp = context.get_value_type(types.intp)
        row0_i, k0_i, p_i, c0_i = (context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 2, 4, 5))
        vector = ir.VectorType(context.get_value_type(dtype), n)
        align = dtype.bitwidth // 8

        def vector_pointer(array_type, array, indices):
            return builder.bitcast(cgutils.get_item_pointer(context, builder, array_type, array, indices),
                                   vector.as_pointer())

        def index(i):
            return ir.Constant(intp, i)

        vectors = [builder.load(vector_pointer(w, w_array, [builder.add(row0_i, index(j)), k0_i]), align=align)
                   for j in range(n)]
        half = n // 2
        mask = ir.VectorType(ir.IntType(32), n)
        low = ir.Constant(mask, [lane for i in range(half) for lane in (i, n + i)])
        high = ir.Constant(mask, [lane for i in range(half, n) for lane in (i, n + i)])
        for _ in range(n.bit_length() - 1):  # log2(n) rounds
            interleaved = []
            for i in range(half):
                interleaved += [builder.shuffle_vector(vectors[i], vectors[i + half], low),
                                builder.shuffle_vector(vectors[i], vectors[i + half], high)]
            vectors = interleaved
        for i, column in enumerate(vectors):
            builder.store(column, vector_pointer(panels, panels_array, [p_i, builder.add(k0_i, index(i)), c0_i]),
                          align=align)
        return context.get_dummy_value()
    return signature, codegen


@njit(cache=True, nogil=True, error_model="numpy")
def pack_rows(w, r0, r1, panels):
    """panels[p, k, c] = w[r0 + p·W + c, k]: B = (rows r0 … r1 − 1 of w)ᵀ packed, zero beyond r1.

    Whole panels go as square blocks of one vector's lanes, transposed in registers
    (transpose_block: 2–2.5× faster than value by value); a panel past r1 and the last
    K % lanes k value by value.
    """
    P, K, W = panels.shape
    if K != w.shape[1] or W != panel_width(w) or not 0 <= r0 <= r1 <= w.shape[0]:
        raise ValueError("pack_rows: shapes of w, the rows and panels do not match")
    if (K > 1 and w.strides[1] != w.itemsize) or (W > 1 and panels.strides[2] != panels.itemsize):
        raise ValueError("pack_rows: w's rows and the panels' rows must be contiguous")
    lanes = W // PANEL_VECTORS
    K_whole = K - K % lanes
    for p in range(P):
        u0 = r0 + p * W
        c1 = max(0, min(W, r1 - u0))  # rows of w in this panel
        panel = panels[p]
        if c1 == W:
            for c0 in range(0, W, lanes):
                for k0 in range(0, K_whole, lanes):
                    transpose_block(w, u0 + c0, k0, panels, p, c0)
            copy_zero_padded(w[u0:u0 + W, K_whole:].T, panel[K_whole:])
        else:
            copy_zero_padded(w[u0:u0 + c1].T, panel)


@njit(cache=True, nogil=True, error_model="numpy")
def copy_zero_padded(block, panel):
    """panel[k, c] = block[k, c] for c < block.shape[1], 0 beyond: the parts of a panel that
    pack_rows' and pack_columns' whole-panel paths leave (a last panel past the weight's end;
    pack_rows' last K % lanes rows), value by value."""
    n = block.shape[1]
    for k in range(panel.shape[0]):
        for c in range(n):
            panel[k, c] = block[k, c]
        for c in range(n, panel.shape[1]):
            panel[k, c] = 0


@njit(cache=True, nogil=True, error_model="numpy")
def pack_gate_rows(w, H, j0, j1):
    """Panels of each gate block's B_g = (rows g·H + j0 … g·H + j1 − 1 of w)ᵀ, for h @ W_hhᵀ on a
    tile's units: (G, panels, K, W) for w (G·H, K).

    One set of panels per gate, so gate_products' output has the gate first (G, rows, units),
    which the pointwise passes index with a constant g: with the gates side by side in a row,
    LLVM left the lstm pass scalar (55 against 7 ns per unit).
    """
    nj, K = j1 - j0, w.shape[1]
    W = panel_width(w)
    G = w.shape[0] // H
    panels = np.empty((G, -(-nj // W), K, W), w.dtype)
    for gate in range(G):
        pack_rows(w, gate * H + j0, gate * H + j1, panels[gate])
    return panels


@njit(cache=True, nogil=True, error_model="numpy")
def pack_columns(w, j0, j1):
    """Panels of B = w[:, j0:j1], for the backward product da @ W_hh (the tile's units' columns).

    W is a compile-time constant here, so a whole panel's row is a fixed copy of W values
    that LLVM turns into vector moves (a run-time bound left it scalar: 3× slower).
    """
    K = w.shape[0]
    W = columns_per_panel(w.itemsize)
    panels = np.empty((-(-(j1 - j0) // W), K, W), w.dtype)
    for p in range(panels.shape[0]):
        c0 = j0 + p * W
        c1 = min(W, j1 - c0)
        panel = panels[p]
        if c1 == W:
            for k in range(K):
                source, dest = w[k, c0:c0 + W], panel[k]
                for c in range(W):
                    dest[c] = source[c]
        else:  # the last panel, zeros past j1
            copy_zero_padded(w[:, c0:j1], panel)
    return panels


@njit(cache=True, nogil=True, error_model="numpy")
def matmul(a, b):
    """a (M, K) @ b (K, N) on the calling thread, as a new C-contiguous (M, N) array
    (matmul_into). twin: reference.affine.affine / affine_backward's products."""
    out = np.empty((a.shape[0], b.shape[1]), b.dtype)
    matmul_into(a, b, out)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def matmul_into(a, b, out):
    """out = a (M, K) @ b (K, N) on the calling thread, out's rows contiguous: b packed as
    panels (pack_columns), then panel_product, through a scratch when N is not a whole number
    of panels. The GEMMs of jit.cpu.gemms. twin: reference.affine.affine_backward's products.
    """
    N = b.shape[1]
    panels = pack_columns(b, 0, N)
    if product_columns(panels) == N:
        panel_product(a, panels, out)
        return
    whole = product_output(a.shape[0], panels)  # zero-padded past N: drop the padding
    panel_product(a, panels, whole)
    store_rows(whole, out, 0, 0, N)


@njit(cache=True, nogil=True, error_model="numpy")
def product_output(rows, panels):
    """A scratch output for panel_product: rows × product_columns(panels)."""
    return np.empty((rows, product_columns(panels)), panels.dtype)


@njit(cache=True, nogil=True, error_model="numpy")
def gate_outputs(rows, gate_panels):
    """A scratch output for gate_products: (G, rows, product_columns of one gate's panels)."""
    return np.empty((gate_panels.shape[0], rows, gate_panels.shape[1] * gate_panels.shape[3]), gate_panels.dtype)


@njit(cache=True, error_model="numpy")
def gate_products(a, gate_panels, out):
    """out[g, :, :nj] = a @ B_g for each gate block g (pack_gate_rows' panels, gate_outputs' out)."""
    for gate in range(gate_panels.shape[0]):
        panel_product(a, gate_panels[gate], out[gate])


@njit(cache=True, error_model="numpy")
def project_inputs(x, w_ih, H, b0, b1, j0, j1, out):
    """The input projection of a tile, every step at once: out[g, t·nb + b, u] = x[t, b0 + b] ·
    W_ih[g·H + j0 + u] for the tile's rows [b0, b1) and units [j0, j1) (nb = b1 − b0).

    out: (G, ≥ T·nb, ≥ panel_columns(j1 − j0)), gate first as gate_outputs' arrays. Each
    thread runs it for its own tile before its time loop: no other thread's work, no BLAS.
    W_ih is packed projection_group panels at a time into one small buffer that every row of
    every step runs over before the next group, as BLAS packs its blocks (packed whole, it cost
    3–18% at L1 and L2). A tile with every batch row is one matrix of T·B rows; a tile of
    some rows copies them into one matrix when there are several gate blocks and I ≤ nj (the
    copy then adds at most a third to the tile's projection memory), else goes step by step.
    twin: reference.affine.affine (x W_ihᵀ; the bias is added in the pointwise pass).
    """
    T, B, I = x.shape
    nb, nj = b1 - b0, j1 - j0
    G = w_ih.shape[0] // H
    W = panel_width(x)
    per_step = nb != B and (G == 1 or I > nj)
    rows = x.reshape(T * B, I)  # the tile's rows when it has every batch row
    if nb != B and not per_step:
        rows = np.empty((T * nb, I), x.dtype)
        for t in range(T):
            store_rows(x[t, b0:b1], rows, t * nb, 0, I)
    n_group = projection_group(I, W, x.itemsize)
    group = np.empty((n_group, I, W), x.dtype)
    for gate in range(G):
        for c0 in range(0, nj, n_group * W):
            c1 = min(nj, c0 + n_group * W)
            panels = group[:-(-(c1 - c0) // W)]
            pack_rows(w_ih, gate * H + j0 + c0, gate * H + j0 + c1, panels)
            columns = out[gate, :, c0:c0 + panels.shape[0] * W]
            if per_step:
                for t in range(T):
                    panel_product(x[t, b0:b1], panels, columns[t * nb:(t + 1) * nb])
            else:
                panel_product(rows, panels, columns)


@njit(cache=True, error_model="numpy")
def project_matrix(rows, w_ih, H, j0, j1, out):
    """out[g, i, u] = rows[i] · W_ih[g·H + j0 + u] for every row i of ``rows`` (R, I): the
    projection of a tile's inputs already gathered into one matrix (project_tile_inputs), W_ih
    packed one group at a time as project_inputs does."""
    I = rows.shape[1]
    nj = j1 - j0
    G = w_ih.shape[0] // H
    W = panel_width(rows)
    n_group = projection_group(I, W, rows.itemsize)
    group = np.empty((n_group, I, W), rows.dtype)
    for gate in range(G):
        for c0 in range(0, nj, n_group * W):
            c1 = min(nj, c0 + n_group * W)
            panels = group[:-(-(c1 - c0) // W)]
            pack_rows(w_ih, gate * H + j0 + c0, gate * H + j0 + c1, panels)
            panel_product(rows, panels, out[gate, :, c0:c0 + panels.shape[0] * W])


@njit(cache=True, error_model="numpy")
def project_tile_inputs(x, w_ih, H, lengths, order, reverse, b0, b1, j0, j1, active, offsets, x_rows, out):
    """The input projection of a time loop's tile (jit.cpu.steps): out[g, offsets[s] + r, u] =
    x[t, order[b0 + r]] · W_ih[g·H + j0 + u] for each step s and running row r, t its time.

    A direct tile whose rows all run every step is the cells' case, project_inputs (offsets[s]
    = s·nb). Otherwise only the valid (step, row) pairs are projected: gathered, in the order
    the loop reads them, into x_rows (≥ offsets[T] rows of I), then one product per group.
    """
    T = x.shape[0]
    nb = b1 - b0
    every_step = True
    for s in range(T):
        every_step &= active[s] == nb
    if every_step and runs_direct(order, reverse, b0, b1):
        project_inputs(x, w_ih, H, b0, b1, j0, j1, out)
        return
    if offsets[T] > x_rows.shape[0] or out.shape[1] < offsets[T]:
        raise ValueError("project_tile_inputs: x_rows or out has fewer rows than the tile's valid steps")
    rows = x_rows[:offsets[T]]
    gather_inputs(x, lengths, order, reverse, b0, b1, active, offsets, rows)
    project_matrix(rows, w_ih, H, j0, j1, out)


@register_jitable
def projection_group(K, W, itemsize):
    """Panels of W_ih that project_inputs packs at a time: PANEL_GROUP, or fewer where they
    would fill more than half of a core's L2 (the rows of x and the output pass beside them)."""
    return max(1, min(PANEL_GROUP, (L2_BYTES // 2) // max(1, K * W * itemsize)))


@njit(cache=True, nogil=True, error_model="numpy")
def gate_units(row, gate, H, j0, j1):
    """row[gate·H + j0 : gate·H + j1]: a tile's units of one gate block of a gates-wide row (a
    view), which the pointwise passes index by the unit alone (indexed in place they ran at
    16 rather than 10 ns per lstm unit: LLVM vectorised them less well)."""
    return row[gate * H + j0:gate * H + j1]


@njit(cache=True, error_model="numpy")
def store_gate_blocks(blocks, n, H, j0, j1, dest, row0):
    """dest[row0 + b, g·H + j0 : g·H + j1] = blocks[g, b, :nj] for each gate block g and row b < n.

    blocks (G, ≥ n, ≥ nj): a tile's per-gate values, nj = j1 − j0 units per gate (gate_outputs'
    layout); dest (B, G·H): one step of a per-step output (gates, da).
    """
    for gate in range(blocks.shape[0]):
        store_rows(blocks[gate][:n], dest, row0, gate * H + j0, j1 - j0)


@njit(cache=True, nogil=True, error_model="numpy")
def store_rows(source, dest, row0, column0, n):
    """dest[row0 + r, column0 : column0 + n] = source[r, :n] for every row r of source: what
    the time loops store each step (h into hs[t], the gates or da into theirs).

    Whole C arrays with the tile's place as offsets: Numba types a 2-D slice such as
    hs[t, b0:b1, j0:j1] as an array of any strides, and LLVM left its copy scalar (an lstm
    S2 tile's gate stores: 94 µs by slice assignment, 24 µs this way).
    """
    if n > source.shape[1] or row0 < 0 or column0 < 0 or row0 + source.shape[0] > dest.shape[0] \
            or column0 + n > dest.shape[1]:
        raise ValueError("store_rows: source's rows do not fit dest at (row0, column0)")
    for r in range(source.shape[0]):
        # A slice of a row keeps its contiguity in Numba's types; indexed at column0 + c, the
        # index could be negative, and its wraparound check per value kept LLVM scalar
        source_row, dest_row = source[r], dest[row0 + r, column0:column0 + n]
        for c in range(n):
            dest_row[c] = source_row[c]


@njit(cache=True, nogil=True, error_model="numpy")
def add_rows(source, dest, n):
    """dest[r, :n] += source[r, :n] for every row r of source (why row by row: store_rows)."""
    if n > source.shape[1] or n > dest.shape[1] or source.shape[0] > dest.shape[0]:
        raise ValueError("add_rows: source's rows do not fit dest")
    for r in range(source.shape[0]):
        source_row, dest_row = source[r], dest[r]
        for c in range(n):
            dest_row[c] += source_row[c]
