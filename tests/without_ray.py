"""Make this process behave as if Ray were not installed: ``import ray``
raises ModuleNotFoundError and ``importlib.util.find_spec("ray")`` is None.

Import it first (``python -p without_ray -m pytest ...`` loads it as a
pytest plugin, or ``import without_ray``) with ``tests/`` on the path.
"""

import sys

_HIDDEN = "ray"


class _FinderWithoutRay:
    """Wraps one meta path finder; finds nothing of the hidden package."""

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == _HIDDEN:
            return None
        find = getattr(self._finder, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def __getattr__(self, attribute):
        return getattr(self._finder, attribute)


def hide_ray():
    if any(name.partition(".")[0] == _HIDDEN for name in sys.modules):
        raise RuntimeError("ray is already imported; hide it before anything imports it")
    sys.meta_path[:] = [f if isinstance(f, _FinderWithoutRay) else _FinderWithoutRay(f)
                        for f in sys.meta_path]


hide_ray()
