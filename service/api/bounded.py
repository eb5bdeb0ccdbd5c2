"""`python -m service.api.bounded LIMIT_BYTES ARGS...`: `dcl ARGS...` (the engine's CLI) under an
address-space limit, set in the child itself (a `preexec_fn` is unsafe in the API's threads).
Running out of it exits with OUT_OF_MEMORY and one line on stderr, instead of the OOM killer."""

from __future__ import annotations

import resource
import sys

OUT_OF_MEMORY = 75
"""The exit code that says the limit was reached."""


def _out_of_memory(exc: BaseException) -> bool:
    # numpy raises a MemoryError; torch's allocator a RuntimeError; a shared library that
    # cannot be mapped an ImportError ("failed to map segment", "cannot allocate memory")
    text = str(exc)
    return isinstance(exc, MemoryError) or any(
        words in text for words in ("allocate memory", "out of memory", "failed to map segment"))


def main() -> int:
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from dcl_core.cli import main as dcl_main

    try:
        return dcl_main(sys.argv[2:])
    except Exception as exc:  # MemoryError included
        if not _out_of_memory(exc):
            raise
        print(f"out of memory: more than {limit >> 20} MiB of address space", file=sys.stderr)
        return OUT_OF_MEMORY


if __name__ == "__main__":
    sys.exit(main())
