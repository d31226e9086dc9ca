"""The ``popularity`` command: one subcommand per flow, ``--json`` for scripts.

:mod:`cli.main` builds the app from the command groups (``pipeline_commands``: run, collect, validate,
train, promote, model; ``service_commands``: serve, predict; ``outcome_commands``: monitor, feedback;
``stack_commands``: stack, prefect, worker, schedule, ui) and turns every error into one line.
:mod:`cli.output` holds the error model and the JSON line they share, :mod:`cli.options` the options
and the usage checks that answer before any server starts.

Settings are exported to the environment before Prefect, MLflow or BentoML is imported, so every
file they write lands under ``POPULARITY_HOME``. Exit codes: 0 ok, 1 refused or failed, 2 usage error;
every error is one line on stderr (``--debug`` adds the traceback) and, under ``--json``,
``{"error": ..., "kind": ...}`` as the last line on stdout.
"""
