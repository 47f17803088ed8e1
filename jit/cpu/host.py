"""The host CPU as jit.cpu's kernels see it: SIMD vector width, register tile, cache sizes.

Read once, at import, before any kernel compiles: Numba compiles for the host CPU, and the
products' register tile (jit.cpu.products) is fixed when they compile. Everything here
that a kernel depends on is part of CACHE_TAG, which names the on-disk cache's files
(jit.cpu.cache), so code built for one width is never loaded for another.

- VECTOR_BYTES: 64 where the host has AVX-512 (32 vector registers), else 32 (AVX2; LLVM
  splits a 32-byte vector in two on narrower SIMD). CELLBENCH_VECTOR_BYTES=32 or 64 forces
  it, for tests and benchmarks: on an AVX2 host LLVM lowers a 64-byte vector to two 32-byte
  operations, so both widths' code paths run, and must agree, on every x86 machine.
- The register tile, rows × vectors of the products' micro-kernel, is sized to the vector
  registers the width brings (see register_tile).
- L1D_BYTES, L2_BYTES, L3_BYTES: a core's data caches (L3: the one it shares), from the OS
  (sysfs, else sysconf), behind the packing and the thread split (jit.cpu.tiling).
- L3_FEEDS_THE_TILE: whether the shared L3 streams weights to a core as fast as the register
  tile consumes them, which decides when the threads split a large W_hh (jit.cpu.tiling).
"""
import os

import llvmlite.binding as llvm

VECTOR_BYTES_ENV = "CELLBENCH_VECTOR_BYTES"
VECTOR_WIDTHS = (32, 64)


def host_features() -> frozenset:
    """The host CPU's features as LLVM names them (what Numba compiles for)."""
    return frozenset(name for name, on in llvm.get_host_cpu_features().items() if on)


def native_vector_bytes(features: frozenset) -> int:
    """64 with AVX-512 (avx512f), else 32."""
    return 64 if "avx512f" in features else 32


def vector_bytes(environ=os.environ, features=None) -> int:
    """The width the kernels compile for: CELLBENCH_VECTOR_BYTES when set, else the host's."""
    forced = environ.get(VECTOR_BYTES_ENV, "").strip()
    if not forced:
        return native_vector_bytes(host_features() if features is None else features)
    if forced not in {str(w) for w in VECTOR_WIDTHS}:
        raise ValueError(f"{VECTOR_BYTES_ENV}: expected one of {', '.join(map(str, VECTOR_WIDTHS))} (bytes per "
                         f"SIMD vector), got {forced!r}")
    return int(forced)


def register_tile(width: int) -> tuple:
    """(rows, vectors per panel row) of the products' micro-kernel for vectors of ``width`` bytes.

    Each k of the tile's loop is rows × vectors FMAs on as many accumulators, one load per
    vector and one broadcast per row. The accumulators, the loaded vectors and a broadcast
    must fit the vector registers, and ten or more independent sums cover the FMA latency.
    AVX2's 16 registers: 6 × 2 (12 sums). AVX-512's 32: 8 × 2 (16 sums), which also divides
    the 8, 16, 32 and 64 rows a thread gets in the DeepBench configs, so no narrow tail re-reads
    the panels; it was the fastest measured streaming W_hh from L3 (docs/perf-log.md). Panels
    stay two vectors wide, so a gate's units pad to 32 float32 columns, not 64.
    """
    return (8, 2) if width == 64 else (6, 2)


def _sysfs_cache_bytes(level: int, cpu: int = 0):
    """The size in bytes of ``cpu``'s level-``level`` data (or unified) cache from sysfs, or None."""
    base = f"/sys/devices/system/cpu/cpu{cpu}/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return None
    for entry in entries:
        if not entry.startswith("index"):
            continue
        try:
            with open(f"{base}/{entry}/level") as f:
                entry_level = int(f.read())
            with open(f"{base}/{entry}/type") as f:
                kind = f.read().strip()
            with open(f"{base}/{entry}/size") as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        if entry_level == level and kind in ("Data", "Unified"):
            units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
            return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    return None


def cache_bytes(level: int, default: int) -> int:
    """One core's level-``level`` data cache in bytes: sysfs, else sysconf, else ``default``."""
    size = _sysfs_cache_bytes(level)
    if not size:
        name = {1: "SC_LEVEL1_DCACHE_SIZE", 2: "SC_LEVEL2_CACHE_SIZE", 3: "SC_LEVEL3_CACHE_SIZE"}[level]
        try:
            size = os.sysconf(name) if name in os.sysconf_names else 0
        except (OSError, ValueError):
            size = 0
    return size if size and size > 0 else default


def cpuinfo_field(name: str, cpuinfo="/proc/cpuinfo"):
    """The first value of ``name`` (vendor_id, model name, ...) in /proc/cpuinfo, or None where the
    OS does not say."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(name):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def cpu_vendor(cpuinfo="/proc/cpuinfo") -> str:
    """The CPU's vendor string (GenuineIntel, AuthenticAMD, ...), or "" where the OS does not say."""
    return cpuinfo_field("vendor_id", cpuinfo) or ""


def l3_feeds_the_tile(vendor: str) -> bool:
    """Whether a core streams from the shared L3 at the register tile's rate. One core, float32,
    the tile on 16 rows × 1024 k × 2048 columns (8 MiB of panels, past L2) against the same
    held in L2, GFLOP/s: AMD Zen 4, 102–114 against 112–115 (its L3 keeps up); an Intel Xeon
    with AVX-512 (2 MiB L2, mesh L3), 110–115 against 150–161 (it does not). Intel's server
    cores share their L3 over a mesh; other vendors keep the rule measured on AMD."""
    return vendor != "GenuineIntel"


VECTOR_BYTES = vector_bytes()
TILE_ROWS, PANEL_VECTORS = register_tile(VECTOR_BYTES)
L1D_BYTES = cache_bytes(1, 32 << 10)
L2_BYTES = cache_bytes(2, 512 << 10)
L3_BYTES = cache_bytes(3, 32 << 20)
L3_FEEDS_THE_TILE = l3_feeds_the_tile(cpu_vendor())
#: What the compiled kernels depend on beyond their sources and Numba's own key (the CPU's
#: name and features): the vector width and the register tile.
CACHE_TAG = f"v{VECTOR_BYTES}t{TILE_ROWS}x{PANEL_VECTORS}"


def describe() -> str:
    """One line for headers and reports."""
    forced = " (forced)" if os.environ.get(VECTOR_BYTES_ENV, "").strip() else ""
    return (f"{VECTOR_BYTES}-byte vectors{forced}, tile {TILE_ROWS}×{PANEL_VECTORS}, "
            f"L1d {L1D_BYTES >> 10} KiB, L2 {L2_BYTES >> 10} KiB per core, L3 {L3_BYTES >> 20} MiB"
            f"{'' if L3_FEEDS_THE_TILE else ' (slower than the tile)'} "
            f"({llvm.get_host_cpu_name()})")
