"""Building, training and reporting the ensemble teachers (AvNet, JointNet) from their member checkpoints.

The networks themselves live in ``kd_plugin.models.ensembles``. This package stays import-light (its modules
are imported on demand) because ``kd_plugin.config`` imports ``joint_loss`` from here.
"""
