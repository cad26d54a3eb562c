"""Building, training and reporting the ensemble teachers (AvNet, JointNet) from their member checkpoints.

The networks live in ``kd_plugin.models.ensembles``, JointNet's loss weights in ``kd_plugin.distill.jointnet``.
"""
