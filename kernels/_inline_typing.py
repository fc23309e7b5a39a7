"""Compile time: stop numba from compiling ``register_jitable(inline="always")`` functions on
their own, code that is thrown away because every call site inlines them.

numba types an overload by ``_OverloadFunctionTemplate._build_impl``, which ends with "make sure
that the implementation can be fully compiled": a complete compilation (type inference, lowering,
LLVM optimisation and machine code) of the implementation for the call's argument types. For an
overload registered with ``inline="always"`` that machine code is never used: ``generic`` then
runs the front end and type inference again to get the IR that the ``InlineOverloads`` pass
splices into the caller. kernels/book.py writes the whole per-row step as such functions, so a
cold start compiled the step three more times than it runs it (measured with numba's compile
events, fresh cache: the standalone ``process_row`` and ``step`` builds were ~110 s of ~235 s CPU).

(``generic`` also asks the implementation's dispatcher for its call template, which compiles it.)
The patch marks the dispatcher that ``_build_impl`` makes for the implementation as one that may
not compile (``_can_compile = False``), only for templates made by ``register_jitable`` with
``inline="always"`` (their overload function just returns the Python function) around functions
defined in hpte's own modules: other numba code in the same process is left exactly as it is. Both requests
then fold the argument types without compiling; typing errors still surface, from the type
inference that ``generic`` runs on the implementation, and a call site that failed to inline
would fail to lower as it does without the patch (numba stores no compiled code for it). Anything unexpected in
numba's internals (another numba version) leaves numba as it is: slower to compile, same code.
"""
from __future__ import annotations


def _install() -> bool:
    try:
        from numba.core.typing.templates import _OverloadFunctionTemplate
    except ImportError:  # pragma: no cover - another numba layout
        return False
    build = getattr(_OverloadFunctionTemplate, "_build_impl", None)
    if build is None or not hasattr(_OverloadFunctionTemplate, "_get_jit_decorator"):
        return False   # pragma: no cover - another numba version
    if getattr(build, "_hpte_patched", False):
        return True

    def _build_impl(self, cache_key, args, kws):
        ovf = getattr(self, "_overload_func", None)
        inline = getattr(self, "_inline", None)
        key_module = getattr(getattr(self, "key", None), "__module__", None) or ""
        if not (inline is not None and inline.is_always_inline and ovf is not None
                and ovf.__qualname__.startswith("register_jitable.")
                and key_module.startswith("hpte.")):
            return build(self, cache_key, args, kws)
        jitter = self._get_jit_decorator()

        def inline_only(*a, **opts):
            dec = jitter(*a, **opts)

            def wrap(fn):
                disp = dec(fn)
                # typed (by generic) and inlined only: never compiled on its own
                disp._can_compile = False
                return disp
            return wrap

        self._get_jit_decorator = lambda: inline_only    # this template only, for this call
        try:
            return build(self, cache_key, args, kws)
        finally:
            del self._get_jit_decorator

    _build_impl._hpte_patched = True
    _OverloadFunctionTemplate._build_impl = _build_impl
    return True


installed = _install()
