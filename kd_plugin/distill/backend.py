"""The ``builtin`` backend: kd-plugin's own Distiller-protocol classes with its KD policy."""

from ..protocol import config, policy, scheduler
from ..protocol.runtime import Runtime, register_backend
from .policy import KnowledgeDistillationPolicy

BUILTIN = Runtime("builtin", scheduler.CompressionScheduler, policy.ScheduledTrainingPolicy, policy.PolicyLoss,
                  policy.LossComponent, KnowledgeDistillationPolicy, config.read_schedule, config.dict_config)

register_backend("builtin", lambda: BUILTIN)
