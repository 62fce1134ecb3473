"""`ciliumctl policy ...`: each subcommand family lives in its own module."""

import typer

from ciliumctl.cli import policy_store, policy_trace, policy_validate

app = typer.Typer(help="Validate, apply, trace and inspect network policies.", no_args_is_help=True)

policy_validate.register(app)
policy_trace.register(app)
policy_store.register(app)
