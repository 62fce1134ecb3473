"""The ciliumctl command tree. Each group lives in its own module; none imports heavy modules at start-up."""

import sys

import typer

from ciliumctl.cli import agent, demo, endpoint, install, observe, policy, status, version

app = typer.Typer(
    name="ciliumctl",
    help="eBPF networking and security for Kubernetes nodes: install, policy, endpoint, observe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(policy.app, name="policy")
app.add_typer(endpoint.app, name="endpoint")
install.register(app)
observe.register(app)
status.register(app)
version.register(app)
demo.register(app)
agent.register(app)


def run() -> None:
    """Console-script entry: user-facing errors become one line on stderr and an exit code."""
    from ciliumctl.base.errors import CiliumctlError

    try:
        app()  # standalone mode: usage errors print click's message and exit 2
    except CiliumctlError as err:
        sys.stderr.write(f"Error: {err}\n")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `ciliumctl observe | head`
        sys.stderr.close()
        sys.exit(0)
    except Exception as err:  # a bug or an unforeseen environment problem: one line, the trace on request
        import os

        if os.environ.get("CILIUMCTL_DEBUG"):
            raise
        where = f" ({err.filename})" if isinstance(err, OSError) and err.filename else ""
        sys.stderr.write(f"Error: {type(err).__name__}: {err}{where}; run again with CILIUMCTL_DEBUG=1 "
                         "for the full trace and report it\n")
        sys.exit(2)


if __name__ == "__main__":
    run()
