"""``kd-plugin reproduce``: the original experiment end to end, with its tables side by side with ours."""
