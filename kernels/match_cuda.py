"""CUDA driver around the shared per-row step of kernels/book.py (``match_books_cuda``).

One thread per chunk, and a chunk is one book: thread c runs ``process_row`` over the rows
route[pos[c]:chunk_hi[c]] (that book's rows, in arrival order) into output region c, with the
status / resume protocol of ``run_chunk_cpu`` in kernels/match_cpu.py: on return status[c] is
ST_OK and pos[c] == chunk_hi[c], or the ST_* need of row route[pos[c]] (nothing of that row was
applied); row_start / row_count say where each processed row's outputs landed, relative to the
start of its region (regions move when they grow, so positions are relative).

One source: the per-chunk loop is ``run_chunk_cpu``'s own Python function compiled as a CUDA
device function, and the per-row step is kernels/book.py's ``process_row``. Nothing of the
matching logic is written twice.

Why the book helpers are registered again here (``register_book_helpers_for_cuda``):
kernels/book.py decorates its helpers with ``numba.extending.register_jitable``. numba-cuda
0.30.4 has its own typing registries; it can call such generic overloads, but not the ones
declared ``inline="always"`` (typing the inlined body fails with "No implementation of function
add(omitted(default=Undefined), ...)"). So the same Python functions are registered once more
with numba-cuda's own ``numba.cuda.extending.register_jitable`` (found through numba's registry
of generic overloads, so no list to keep in step). They are registered with ``inline="never"``
for CUDA: NVVM inlines the whole tree anyway (the PTX of ``match_books_cuda`` has no ``call``),
and numba's IR-level inlining only made the CUDA compile ~9x slower (52 s against 6 s). The
NamedTuple arguments (Inputs, State, Outputs) themselves are accepted by numba-cuda kernels as
they are: CuPy or numba device arrays inside them are passed by reference, no copy.

Importing this module needs no GPU (compilation happens at the first launch). Under the CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``) the kernel runs as plain Python over NumPy arrays.
"""
from __future__ import annotations

import warnings

import numba
from numba import cuda

from . import book as _book
from .match_cpu import run_chunk_cpu

THREADS_PER_BLOCK = 128      # module-level so tests can make it small (multi-block launches)

_registered: list[tuple[str, str]] = []


def register_book_helpers_for_cuda(module=_book) -> list[tuple[str, str]]:
    """Register every ``register_jitable`` function of `module` with numba-cuda's own registry
    (the same Python function, inline="never"). Idempotent; a no-op under the simulator, where
    device code is plain Python. Returns [(name, inline option of the CPU registration)]."""
    if _registered or numba.config.ENABLE_CUDASIM:
        return _registered
    from numba.core.typing.templates import builtin_registry
    from numba.cuda.extending import register_jitable as cuda_register_jitable

    for fn, fnty in list(builtin_registry.globals):
        if getattr(fn, "__module__", None) != module.__name__:
            continue
        for tmpl in getattr(fnty, "templates", ()):
            inline = getattr(tmpl, "_inline", None)
            if inline is None or getattr(tmpl, "_overload_func", None) is None:
                continue
            opts = dict(getattr(tmpl, "_jit_options", None) or {})
            cuda_register_jitable(inline="never", **opts)(fn)
            _registered.append((fn.__name__, inline.value))
            break
    if not any(name == "process_row" for name, _ in _registered):   # pragma: no cover
        raise RuntimeError(
            f"found no register_jitable process_row in {module.__name__}: numba's overload "
            "registry changed; kernels/match_cuda.py must be adapted")
    return _registered


register_book_helpers_for_cuda()

# The per-chunk loop, compiled for the device from run_chunk_cpu's Python source.
run_chunk_device = run_chunk_cpu.py_func if numba.config.ENABLE_CUDASIM else cuda.jit(device=True)(run_chunk_cpu.py_func)


@cuda.jit
def match_books_cuda(I, S, O, books, route, chunk_lo, chunk_hi, pos, status, row_start, row_count, seq0, stp):
    """Books in parallel on the GPU, one thread per chunk (= per book).

    Parameters
    ----------
    I, S, O : Inputs, State, Outputs (engine/book_state.py) of device arrays.
    books : int64[n], dense book of every input row.
    route : int64[n], input rows sorted by book, arrival order kept within a book.
    chunk_lo, chunk_hi : int64[C], chunk c owns route[chunk_lo[c]:chunk_hi[c]] and region c.
    pos : int64[C], where chunk c resumes (route position); updated.
    status : int64[C], out: ST_OK or the ST_* need of row route[pos[c]].
    row_start, row_count : int64[n, 3], out: per processed row and stream, first output row
        (relative to the region's start) and number of output rows.
    seq0 : int64, seq of input row 0. stp : int64, STP_* mode.
    """
    c = cuda.grid(1)
    if c < chunk_lo.shape[0]:
        st, j = run_chunk_device(I, S, O, books, route, True, c, pos[c], chunk_hi[c],
                                 row_start, row_count, True, seq0, stp)
        status[c] = st
        pos[c] = j


def launch_match_books_cuda(I, S, O, books, route, chunk_lo, chunk_hi, pos, status, row_start,
                            row_count, seq0, stp, threads_per_block: int | None = None) -> None:
    """Launch ``match_books_cuda`` with one thread per chunk (asynchronous on a real GPU)."""
    n_chunks = int(chunk_lo.shape[0])
    if n_chunks == 0:
        return
    tpb = int(threads_per_block or THREADS_PER_BLOCK)
    blocks = (n_chunks + tpb - 1) // tpb
    args = (I, S, O, books, route, chunk_lo, chunk_hi, pos, status, row_start, row_count, seq0, stp)
    if not numba.config.ENABLE_CUDASIM:
        match_books_cuda[blocks, tpb](*args)
        return
    # The simulator runs the device code as Python on NumPy scalars, where the id hash's
    # intended uint64 wrap-around warns ("overflow encountered in scalar multiply").
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        match_books_cuda[blocks, tpb](*args)
