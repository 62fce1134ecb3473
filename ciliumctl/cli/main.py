"""The ciliumctl command tree. Each group lives in its own module; none imports heavy modules at start-up.

`app` is built on first use (module __getattr__), so that `policy validate`, which runs many times in CI jobs
and hooks, can skip Typer entirely (ciliumctl.cli.policy_validate.fast_main)."""

import sys


def _build_app():
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
    return app


def __getattr__(name: str):
    if name == "app":
        app = globals()["app"] = _build_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run() -> None:
    """Console-script entry: user-facing errors become one line on stderr and an exit code."""
    from ciliumctl.base.errors import CiliumctlError

    try:
        from ciliumctl.cli.policy_validate import fast_main

        code = fast_main(sys.argv[1:])
        if code is not None:
            sys.exit(code)
        __getattr__("app")()  # standalone mode: usage errors print click's message and exit 2
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
