"""Training: candidates fitted, logged as MLflow pyfuncs and compared on a snapshot's frozen splits.

``data`` (the splits and their features), ``candidates`` (the one registry), ``trainers`` (how each
family is fitted), ``tuning`` (repeats, Optuna), ``runs`` (a candidate's MLflow run), ``report``
(the comparison) and ``train`` (the entry points).
"""
