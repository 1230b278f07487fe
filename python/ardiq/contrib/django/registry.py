"""Which Django tasks exist: found in modules the project itself imports, never looked up
by importing a name read from Redis.

A stream entry names its task by ``Task.module_path``. An attacker who can write to Redis
could name any importable callable there (``os.system``); so a name is only ever matched
against :class:`Task` objects already defined by the project's own modules: the
``tasks`` module of each installed app, the modules listed in the backend's
``task_modules`` option, and whatever else is imported already. Nothing is imported
because an entry asks for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterable
from typing import Any

from ._compat import Task

_lock = threading.Lock()
_discovered = False


def autodiscover(extra_modules: Iterable[str] = ()) -> None:
    """Import every installed app's ``tasks`` module (when it has one) and `extra_modules`
    (names from the settings, not from Redis). Once per process."""
    global _discovered
    with _lock:
        if _discovered:
            return
        from django.apps import apps

        for config in apps.get_app_configs():
            name = f"{config.name}.tasks"
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
        for name in extra_modules:
            importlib.import_module(name)
        _discovered = True


def find(module_path: str) -> Any | None:
    """The task defined at `module_path` (``package.module.function``) in a module that is
    already imported, or None. Never imports."""
    module_name, _, attr = module_path.rpartition(".")
    module = sys.modules.get(module_name)
    if module is None or not attr:
        return None
    candidate: Any = vars(module).get(attr)
    if issubclass(type(candidate), Task) and candidate.module_path == module_path:
        return candidate
    return None


def all_tasks() -> dict[str, Any]:
    """Every task defined at module level in an imported module, by module path."""
    found: dict[str, Any] = {}
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for value in list(namespace.values()):
            # type(), not isinstance(): isinstance asks `__class__`, which a lazy object
            # (django.contrib.admin.site, settings) answers by setting itself up.
            if issubclass(type(value), Task):
                path = value.module_path
                # Only the task defined under its own name (not an alias imported elsewhere).
                if path.rpartition(".")[0] == module.__name__:
                    found.setdefault(path, value)
    return found
