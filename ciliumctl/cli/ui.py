"""`ciliumctl ui`: the live service map in a browser, served on loopback (ciliumctl.node.ui_server)."""

import typer


def register(app: typer.Typer) -> None:
    @app.command("ui")
    def ui(
        listen: str = typer.Option("127.0.0.1:12000", "--listen", metavar="HOST:PORT",
                                   help="Where the page is served: loopback only (127.0.0.1 or [::1]; port 0 = "
                                        "any free one)."),
        server: str | None = typer.Option(None, "--server", metavar="ADDRESS", show_default=False,
                                          help="Hubble API address (default: the agent's unix socket)."),
    ) -> None:
        """Serve a live service map of the node's flows on a local web page.

        Workloads and peers outside the cluster as nodes grouped by namespace, edges by protocol and port coloured
        by verdict (forwarded, dropped, audit) with their counts, and the flows of a selected edge with hubble
        observe's filter flags. Flows come from the agent's Hubble API or any Hubble server (--server). Open the
        address it prints: it carries a token, as the flows are root's and loopback is every local user's."""
        import os
        import sys

        from ciliumctl.base.errors import CiliumctlError
        from ciliumctl.flows import client
        from ciliumctl.node.ui_server import UiServer

        srv = server or os.environ.get("HUBBLE_SERVER") or client.default_server()
        client.grpc_target(srv)   # a malformed address is one line now, not an error on the page
        ui_server = UiServer(listen, srv)
        try:   # the agent may come later: the page waits for it, the terminal says why it is empty
            client.server_status(srv, timeout=2.0)
        except CiliumctlError as err:
            sys.stderr.write(f"Warning: {err}; the page fills once it answers\n")
        sys.stdout.write(f"Serving the service map on {ui_server.url} (flows from {srv}); Ctrl-C stops it\n")
        sys.stdout.flush()
        try:
            ui_server.serve_forever()
        except KeyboardInterrupt:
            pass
