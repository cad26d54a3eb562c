import pytest
import torch

from kd_plugin.data import TensorLoader, load_split
from kd_plugin.engine.loop import train_epoch
from kd_plugin.protocol.policy import LossComponent, PolicyLoss, ScheduledTrainingPolicy
from kd_plugin.protocol.scheduler import CompressionScheduler


class Recorder(ScheduledTrainingPolicy):
    def __init__(self, log, tag, scale=None):
        super().__init__()
        self.log, self.tag, self.scale = log, tag, scale

    def on_epoch_begin(self, model, zeros_mask_dict, meta, **kwargs):
        self.log.append((self.tag, "on_epoch_begin", meta["current_epoch"]))

    def on_minibatch_begin(self, model, epoch, minibatch_id, minibatches_per_epoch, zeros_mask_dict, meta,
                           optimizer=None):
        self.log.append((self.tag, "on_minibatch_begin", epoch))

    def before_backward_pass(self, model, epoch, minibatch_id, minibatches_per_epoch, loss, zeros_mask_dict,
                             optimizer=None):
        self.log.append((self.tag, "before_backward_pass", epoch))
        if self.scale is not None:
            return PolicyLoss(loss * self.scale, [LossComponent(f"{self.tag} term", loss.detach())])

    def before_parameter_optimization(self, model, epoch, minibatch_id, minibatches_per_epoch, zeros_mask_dict,
                                      meta, optimizer):
        self.log.append((self.tag, "before_parameter_optimization", epoch))

    def on_minibatch_end(self, model, epoch, minibatch_id, minibatches_per_epoch, zeros_mask_dict, optimizer):
        self.log.append((self.tag, "on_minibatch_end", epoch))

    def on_epoch_end(self, model, zeros_mask_dict, meta, **kwargs):
        self.log.append((self.tag, "on_epoch_end", meta["current_epoch"]))


def test_add_policy_epoch_forms_and_checks():
    model = torch.nn.Linear(2, 2)
    scheduler = CompressionScheduler(model)
    a, b = ScheduledTrainingPolicy(), ScheduledTrainingPolicy()
    scheduler.add_policy(a, starting_epoch=1, ending_epoch=8, frequency=3)
    scheduler.add_policy(b, epochs=[0, 4])
    assert sorted(e for e, ps in scheduler.policies.items() if a in ps) == [1, 4, 7]
    assert sorted(e for e, ps in scheduler.policies.items() if b in ps) == [0, 4]
    assert scheduler.sched_metadata[b] == {"starting_epoch": 0, "ending_epoch": 5, "frequency": None}
    for bad in [dict(starting_epoch=3, ending_epoch=3, frequency=1), dict(starting_epoch=-1, ending_epoch=3,
                                                                          frequency=1),
                dict(starting_epoch=0, ending_epoch=3, frequency=4), dict(starting_epoch=0, ending_epoch=3,
                                                                          frequency=0)]:
        with pytest.raises(AssertionError):
            scheduler.add_policy(ScheduledTrainingPolicy(), **bad)


def test_callbacks_run_in_distillers_order_and_only_in_scheduled_epochs(tiny_data):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
    loader = TensorLoader(load_split(tiny_data, "test"), 30, "n")
    log = []
    scheduler = CompressionScheduler(model)
    scheduler.add_policy(Recorder(log, "p"), epochs=[1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(3):
        scheduler.on_epoch_begin(epoch, optimizer)
        train_epoch(model, loader, torch.nn.CrossEntropyLoss(), optimizer, scheduler, epoch, progress=False)
        scheduler.on_epoch_end(epoch, optimizer, metrics={"min": 0.0, "max": 0.0})
    per_batch = ["on_minibatch_begin", "before_backward_pass", "before_parameter_optimization", "on_minibatch_end"]
    assert [name for _, name, _ in log] == ["on_epoch_begin"] + per_batch * 2 + ["on_epoch_end"]
    assert {epoch for _, _, epoch in log} == {1}


def test_policy_losses_compose_in_order():
    model = torch.nn.Linear(2, 2)
    scheduler = CompressionScheduler(model)
    log = []
    scheduler.add_policy(Recorder(log, "first", scale=2.0), epochs=[0])
    scheduler.add_policy(Recorder(log, "second", scale=3.0), epochs=[0])
    scheduler.add_policy(Recorder(log, "silent"), epochs=[0])
    loss = torch.tensor(1.5)
    result = scheduler.before_backward_pass(0, 0, 1, loss, return_loss_components=True)
    assert float(result.overall_loss) == pytest.approx(9.0)
    assert [c.name for c in result.loss_components] == ["first term", "second term"]
    assert [float(c.value) for c in result.loss_components] == [1.5, 3.0]
    assert float(scheduler.before_backward_pass(0, 0, 1, loss)) == pytest.approx(9.0)


def test_policy_returning_wrong_type_is_rejected():
    class Bad(ScheduledTrainingPolicy):
        def before_backward_pass(self, *args, **kwargs):
            return 1.0

    scheduler = CompressionScheduler(torch.nn.Linear(2, 2))
    scheduler.add_policy(Bad(), epochs=[0])
    with pytest.raises(TypeError):
        scheduler.before_backward_pass(0, 0, 1, torch.tensor(1.0))
