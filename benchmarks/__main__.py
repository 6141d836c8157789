"""`make bench`: run every benchmark module in this package that has a ``main()``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    if not names:
        print("no benchmarks yet")
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        if hasattr(module, "main"):
            print(f"== benchmarks.{name}", flush=True)
            module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
