"""`ciliumctl policy ...`: each subcommand family lives in its own module."""

from ciliumctl.cli import policy_draw, policy_generate, policy_store, policy_trace, policy_validate
from ciliumctl.cli.typer_app import App

app = App(help="Validate, apply, trace and inspect network policies.")

policy_validate.register(app)
policy_trace.register(app)
policy_store.register(app)
policy_draw.register(app)
policy_generate.register(app)
