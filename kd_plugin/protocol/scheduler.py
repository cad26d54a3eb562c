"""Distiller's ``CompressionScheduler``: when each policy runs (epochs) and in which callback order."""
from ..util.errors import KDPluginError
from .policy import LossComponent, PolicyLoss


def _state_owner(policy):
    """What holds a policy's checkpoint state: the policy, the LR scheduler of Distiller's LRPolicy, or a
    distillation loss's trainable parts (``loss_state``: a FitNets regressor, CRD's embeddings and memory)."""
    if hasattr(policy, "state_dict"):
        return policy
    return getattr(policy, "lr_scheduler", None) or getattr(policy, "loss_state", None)


class PolicyStates:
    """The checkpoint state of a scheduler's stateful policies (LR schedulers), which Distiller does not keep
    (its scheduler state is the pruning masks only); mixed into both runtimes' schedulers."""

    def stateful_policies(self):
        return [p for p in self.sched_metadata if _state_owner(p) is not None]

    def policy_states(self):
        return [_state_owner(p).state_dict() for p in self.stateful_policies()]

    def load_policy_states(self, state):
        states = state.get("policy_states", [])
        policies = self.stateful_policies()
        if len(states) != len(policies):
            raise KDPluginError(f"checkpoint holds {len(states)} policy states but the schedule has {len(policies)} "
                                f"stateful policies; resume with the same schedule")
        for policy, policy_state in zip(policies, states, strict=True):
            _state_owner(policy).load_state_dict(policy_state)


class CompressionScheduler(PolicyStates):
    def __init__(self, model, zeros_mask_dict=None, device=None):
        self.model = model
        self.device = device
        self.policies = {}
        self.sched_metadata = {}
        # Distiller keeps one (unused here) mask per parameter; its loader expects every name present.
        self.zeros_mask_dict = zeros_mask_dict or {name: None for name, _ in model.named_parameters()}

    def add_policy(self, policy, epochs=None, starting_epoch=0, ending_epoch=1, frequency=1):
        if epochs is None:
            if not 0 <= starting_epoch < ending_epoch:
                raise AssertionError(f"starting_epoch {starting_epoch} must be >= 0 and < ending_epoch {ending_epoch}")
            if not 0 < frequency <= ending_epoch - starting_epoch:
                raise AssertionError(f"frequency {frequency} must be in 1..{ending_epoch - starting_epoch}")
            epochs = list(range(starting_epoch, ending_epoch, frequency))
        else:
            epochs = list(epochs)
            if not epochs:
                raise AssertionError("epochs must not be empty")
            starting_epoch, ending_epoch, frequency = epochs[0], epochs[-1] + 1, None
        for epoch in epochs:
            self.policies.setdefault(epoch, []).append(policy)
        self.sched_metadata[policy] = {"starting_epoch": starting_epoch, "ending_epoch": ending_epoch,
                                       "frequency": frequency}

    def _active(self, epoch):
        for policy in self.policies.get(epoch, ()):
            meta = self.sched_metadata[policy]
            meta["current_epoch"] = epoch
            yield policy, meta

    def on_epoch_begin(self, epoch, optimizer=None, **kwargs):
        for policy, meta in self._active(epoch):
            policy.on_epoch_begin(self.model, self.zeros_mask_dict, meta, **kwargs)

    def on_minibatch_begin(self, epoch, minibatch_id, minibatches_per_epoch, optimizer=None):
        for policy, meta in self._active(epoch):
            policy.on_minibatch_begin(self.model, epoch, minibatch_id, minibatches_per_epoch, self.zeros_mask_dict,
                                      meta, optimizer)

    def before_backward_pass(self, epoch, minibatch_id, minibatches_per_epoch, loss, optimizer=None,
                             return_loss_components=False):
        """Each policy's PolicyLoss replaces the running loss; their components are concatenated."""
        overall_loss, components = loss, []
        for policy, _ in self._active(epoch):
            policy_loss = policy.before_backward_pass(self.model, epoch, minibatch_id, minibatches_per_epoch,
                                                      overall_loss, self.zeros_mask_dict, optimizer)
            if policy_loss is not None:
                components += self.verify_policy_loss(policy_loss)
                overall_loss = policy_loss.overall_loss
        if return_loss_components:
            return PolicyLoss(overall_loss, components)
        return overall_loss

    def before_parameter_optimization(self, epoch, minibatch_id, minibatches_per_epoch, optimizer):
        for policy, meta in self._active(epoch):
            policy.before_parameter_optimization(self.model, epoch, minibatch_id, minibatches_per_epoch,
                                                 self.zeros_mask_dict, meta, optimizer)

    def on_minibatch_end(self, epoch, minibatch_id, minibatches_per_epoch, optimizer=None):
        for policy, _ in self._active(epoch):
            policy.on_minibatch_end(self.model, epoch, minibatch_id, minibatches_per_epoch, self.zeros_mask_dict,
                                    optimizer)

    def on_epoch_end(self, epoch, optimizer=None, **kwargs):
        for policy, meta in self._active(epoch):
            meta["optimizer"] = optimizer
            policy.on_epoch_end(self.model, self.zeros_mask_dict, meta, **kwargs)

    def state_dict(self):
        return {"masks_dict": dict(self.zeros_mask_dict), "policy_states": self.policy_states()}

    def load_state_dict(self, state, normalize_dataparallel_keys=False):
        self.load_policy_states(state)

    @staticmethod
    def verify_policy_loss(policy_loss):
        if not isinstance(policy_loss, PolicyLoss):
            raise TypeError(f"a Policy's before_backward_pass must return None or PolicyLoss, got {type(policy_loss)}")
        components = policy_loss.loss_components
        if not isinstance(components, list):
            components = [components]
        if not all(isinstance(c, LossComponent) for c in components):
            raise TypeError("every loss component must be a LossComponent")
        return components
