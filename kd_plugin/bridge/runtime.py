"""The engine's runtime made of Distiller's own classes: its CompressionScheduler, its schedule parser
(``distiller.config.dict_config``, resolving kd-plugin's extensions once registered) and its policy types."""
import contextlib
import copy
import io
from functools import partial

import distiller
import distiller.config
from distiller.policy import LossComponent, PolicyLoss, ScheduledTrainingPolicy

from ..protocol.config import COMPONENT_CLASSES, ScheduleError, component_args, read_schedule
from ..protocol.runtime import Runtime
from ..protocol.scheduler import PolicyStates
from ..protocol.weight_names import check_weight_names
from ..util.errors import KDPluginError
from .policies import KnowledgeDistillationPolicy
from .registration import register_with_distiller


def distiller_schedule(sched_dict, overrides=None):
    """A copy Distiller's parser may consume (it pops ``class``), with flag overrides applied to kd-plugin's
    components. The ``training:`` section is kd-plugin's; Distiller's parser never looks at it."""
    sched = copy.deepcopy(dict(sched_dict))
    for section in COMPONENT_CLASSES:
        for name, definition in (sched.get(section) or {}).items():
            sched[section][name] = {"class": definition["class"], **component_args(section, definition, overrides)}
    sched.setdefault("policies", [])  # Distiller indexes sched_dict['policies'] unconditionally
    return sched


def dict_config(model, optimizer, sched_dict, scheduler=None, resumed_epoch=None, overrides=None, source="schedule"):
    """``distiller.config.dict_config`` on a kd-plugin-validated schedule; its failures become one line."""
    register_with_distiller()
    check_weight_names(sched_dict, [name for name, _ in model.named_parameters()], source)
    printed = io.StringIO()  # Distiller prints "Fatal error while parsing ..." before re-raising
    try:
        with contextlib.redirect_stdout(printed):
            return distiller.config.dict_config(model, optimizer, distiller_schedule(sched_dict, overrides),
                                                scheduler, resumed_epoch)
    except KDPluginError as err:
        raise ScheduleError(f"{source}: {err}") from None
    except Exception as err:  # Distiller raises AssertionError, ValueError, KeyError, TypeError, ...
        raise ScheduleError(f"{source}: Distiller's schedule parser: {type(err).__name__}: {err}") from None


class CompressionScheduler(PolicyStates, distiller.CompressionScheduler):
    """Distiller's scheduler (every callback is Distiller's); its checkpoint state also holds the LR schedulers'
    states, as the built-in one does, so a resumed run continues exactly. Distiller's own ``load_checkpoint``
    reads the masks and ignores the rest."""

    def state_dict(self):
        return {**super().state_dict(), "policy_states": self.policy_states()}

    def load_state_dict(self, state, normalize_dataparallel_keys=False):
        super().load_state_dict(state, normalize_dataparallel_keys)
        self.load_policy_states(state)


def file_config(model, optimizer, filename, scheduler=None, resumed_epoch=None, overrides=None):
    """``distiller.file_config`` as the launcher provides it: kd-plugin's safe reader (relative paths resolved
    against the file's folder, weight names checked), then Distiller's own parser with flag OVERRIDES."""
    return dict_config(model, optimizer, read_schedule(filename, distiller_components=True), scheduler,
                       resumed_epoch, overrides, filename)


def distiller_runtime():
    register_with_distiller()
    return Runtime("distiller", CompressionScheduler, ScheduledTrainingPolicy, PolicyLoss, LossComponent,
                   KnowledgeDistillationPolicy, partial(read_schedule, distiller_components=True), dict_config)
