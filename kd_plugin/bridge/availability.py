"""Whether IntelLabs Distiller can be imported, and why not when it cannot."""
import importlib

from ..protocol.runtime import BackendUnavailable, distiller_importable

INSTALL_HINT = "install IntelLabs Distiller from its repository (see the README section 'Running inside Distiller')"


class DistillerUnavailable(BackendUnavailable):
    pass


def import_distiller():
    """The ``distiller`` package, after checking it is IntelLabs Distiller; DistillerUnavailable otherwise."""
    if not distiller_importable():
        raise DistillerUnavailable(f"Distiller is not installed; {INSTALL_HINT}")
    try:
        distiller = importlib.import_module("distiller")
        models = importlib.import_module("distiller.models")
    except Exception as err:  # a broken install fails in many ways (pkg_resources, version pins, torch API)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DistillerUnavailable(f"'import distiller' failed ({type(err).__name__}: {reason}); {INSTALL_HINT}") \
            from None
    if not hasattr(distiller, "CompressionScheduler") or not hasattr(models, "register_user_model"):
        raise DistillerUnavailable(f"the installed 'distiller' package is not IntelLabs Distiller 0.4 (the PyPI "
                                   f"name belongs to an unrelated project); {INSTALL_HINT}")
    return distiller


def distiller_available():
    try:
        import_distiller()
        return True
    except DistillerUnavailable:
        return False
