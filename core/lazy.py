"""A package's names imported on first use (PEP 562): `import core` or `import rag` loads none of their heavy
dependencies (torch, sentence-transformers), so a command that needs few of them starts fast (`llmkit search`)."""

import importlib
from collections.abc import Callable


def lazy_exports(package: str, homes: dict[str, tuple[str, ...]],
                 namespace: dict) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """(__all__, __getattr__, __dir__) for `package`, whose names live in the modules `homes` maps to them; a name
    is imported when first asked for, then kept in `namespace` (the package's globals) so later lookups are plain."""
    module_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_of[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *module_of})

    return sorted(module_of), __getattr__, __dir__
