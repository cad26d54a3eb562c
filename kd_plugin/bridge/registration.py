"""``register_with_distiller``: kd-plugin's networks and YAML extensions, visible to Distiller's own tools.

Models go through Distiller's extension API (``distiller.models.register_user_model``) and are appended, in
place and lower-case, to ``distiller.models.ALL_MODEL_NAMES``, the list Distiller's ``compress_classifier``
uses as ``choices`` for ``--arch`` and ``--kd-teacher``. Names Distiller already builds for CIFAR-10
(``vgg11/13/16/19_bn_cifar``, the same networks) keep Distiller's constructor. Distiller's schedule parser
resolves ``class:`` from the globals of ``distiller.config``; the extension classes are added there under
names Distiller does not use. Nothing of Distiller's is replaced. Networks Distiller builds through kd-plugin
take Distiller's 0.5/0.5-normalized input and convert it to their own (``bridge.normalization``).
"""
import bisect
from dataclasses import dataclass
from functools import partial

import distiller.config
import distiller.models

from ..models import dataset_of, list_models
from ..util.errors import KDPluginError
from .normalization import create_for_distiller
from .policies import EXTENSION_CLASSES


@dataclass
class Registration:
    models: list  # kd-plugin names Distiller now builds through register_user_model
    distillers_own: list  # kd-plugin names Distiller already builds itself (left untouched)
    extensions: list  # class names added to distiller.config


def distillers_own_models(dataset="cifar10"):
    """Names Distiller builds without extensions for DATASET."""
    own = {"cifar10": distiller.models.CIFAR10_MODEL_NAMES, "imagenet": distiller.models.IMAGENET_MODEL_NAMES}
    return set(own.get(dataset, ()))


def register_with_distiller():
    """Register every kd-plugin arch and YAML extension class with Distiller; safe to call any number of times."""
    registration = Registration([], [], [])
    names = distiller.models.ALL_MODEL_NAMES
    for name in list_models():
        dataset = dataset_of(name)
        if name in distillers_own_models(dataset):
            registration.distillers_own.append(name)
            continue
        distiller.models.register_user_model(name, dataset, partial(create_for_distiller, name, dataset))
        if name not in names:
            bisect.insort(names, name)  # in place: the parser's choices are this very list
        registration.models.append(name)
    namespace = vars(distiller.config)
    for class_name, cls in EXTENSION_CLASSES.items():
        present = namespace.get(class_name)
        if present is not None and present is not cls:
            raise KDPluginError(f"distiller.config already defines {class_name} ({present!r}); kd-plugin will not "
                                f"replace it")
        namespace[class_name] = cls
        registration.extensions.append(class_name)
    return registration
