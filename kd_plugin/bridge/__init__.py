"""kd-plugin inside a real IntelLabs Distiller: zoo and YAML registration, Distiller's runtime classes.

Nothing here imports Distiller until a function is called, so kd-plugin works the same without it.
``register_with_distiller()`` makes kd-plugin's networks and YAML extensions visible to Distiller's own tools;
``distiller_runtime()`` gives the engine Distiller's scheduler, schedule parser and policy classes.
"""
from ..protocol.runtime import distiller_importable, register_backend
from .availability import DistillerUnavailable, distiller_available, import_distiller


def register_with_distiller():
    """Register kd-plugin's models and YAML extension classes with Distiller (idempotent); see ``registration``."""
    import_distiller()
    from .registration import register_with_distiller as register

    return register()


def distiller_runtime():
    """The engine's runtime made of Distiller's own classes (``kd_plugin.protocol.runtime.Runtime``)."""
    import_distiller()
    from .runtime import distiller_runtime as build

    return build()


register_backend("distiller", distiller_runtime, distiller_importable)

__all__ = ["DistillerUnavailable", "distiller_available", "distiller_runtime", "import_distiller",
           "register_with_distiller"]
