"""`ciliumctl demo`: the getting-started scenario on a sandbox node (see ciliumctl/demo.py)."""

import typer


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class _UI:
    """Steps in bold on a terminal, plain lines otherwise; verdict events as they are read."""

    def __init__(self):
        from ciliumctl.cli.common import console

        self.con = console()

    def step(self, text: str) -> None:
        if self.con.is_terminal:
            self.con.print(f"\n[bold]==> {_esc(text)}[/]", markup=True)
        else:
            self.con.print(f"\n==> {text}", markup=False)

    def detail(self, text: str) -> None:
        self.con.print(f"    {text}", markup=False)

    def endpoints(self, eps: list) -> None:
        from ciliumctl.cli.endpoint import _row, _wide_table

        self.con.print("")
        self.con.print(_wide_table([_row(ep) for ep in eps], False).rstrip("\n"), markup=False)

    def event(self, text: str) -> None:
        colour = "red" if "DROPPED" in text else "green"
        if self.con.is_terminal:
            self.con.print(f"    [dim]event[/] [{colour}]{_esc(text)}[/]", markup=True)
        else:
            self.con.print(f"    event {text}", markup=False)

    def outcome(self, who: str, ok: bool, text: str, expected: bool) -> None:
        mark = "ok" if ok == expected else "UNEXPECTED"
        if self.con.is_terminal:
            colour = "green" if ok == expected else "red"
            self.con.print(f"  [{colour}]{_esc(text)}[/]  [dim]({mark})[/]", markup=True)
        else:
            self.con.print(f"  {text}  ({mark})", markup=False)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def _cmd(
        keep: bool = typer.Option(False, "--keep", help="Leave the sandbox node, endpoints and policy in place."),
    ) -> None:
        """Run Cilium's getting-started demo on a sandbox node.

        deathstar, tiefighter and xwing endpoints, an L3/L4 policy, and the verdicts the datapath reports."""
        from ciliumctl.node import demo

        ui = _UI()
        sb = demo.run(ui, keep=keep)
        if keep:
            for line in demo.keep_hint(sb):
                ui.detail(line)
        else:
            ui.detail("done: tiefighter landed, xwing was dropped by policy")
