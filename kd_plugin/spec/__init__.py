"""The run spec (kd_plugin.spec.run): the typed description of a run every layer speaks."""
from .meaning import max_threads, usable_cores
from .run import FLAG_FIELDS, RunSpec, flag_of

__all__ = ["FLAG_FIELDS", "RunSpec", "flag_of", "max_threads", "usable_cores"]
