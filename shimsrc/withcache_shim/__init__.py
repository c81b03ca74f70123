"""withcache_shim: make unchanged curl/wget command lines use a withcache cache-host.

Standard library only, and nothing from the `withcache` server package: the shim must run on
any box with a Python, or be copied there as a directory. `plan()` decides, `__main__` execs.
"""

from .plan import RealToolNotFound, plan

__all__ = ["RealToolNotFound", "plan"]
