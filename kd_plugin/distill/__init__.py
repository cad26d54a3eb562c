"""Distillation: what a teacher teaches (policies and losses), the teacher runner and its exact output cache.

Importing the package registers its schedule components (``KnowledgeDistillationExtension``,
``JointNetLossWeights``, ``MutualLearning``) and the ``builtin`` backend.
"""
from . import backend, extension, jointnet, mutual  # noqa: F401  (registration side effects)
