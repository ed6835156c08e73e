"""`extsock xfrmi-updown`: where the updown script of route-based clones is."""

from __future__ import annotations

import click


@click.command("xfrmi-updown")
def xfrmi_updown() -> None:
    """Print the path of the updown script of route-based clones (clone_if_id_base)."""
    from importlib.resources import files

    click.echo(str(files("extsock_py") / "data" / "xfrmi-updown.sh"))
