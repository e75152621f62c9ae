"""A site's own say: which apps it runs, and its key pair.

    oncofed site keygen --out DIR                      the site's key pair, made at the hospital
    oncofed site approve --kit DIR --fab FILE [--yes]  review an app and add its hash to the allow-list
    oncofed site apps --kit DIR                        the approved apps
    oncofed site revoke-app --kit DIR --hash H         remove one

Each command calls one function of deploy/site/trust.py; `oncofed_cli` puts `app` in the `site` group. Flower,
the FAB reader and cryptography load when a command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.shared.exit_codes import reports_errors

app = typer.Typer()
"""The site's commands: keygen, approve, apps, revoke-app."""

SiteKitOption = Annotated[
    Path, typer.Option("--kit", help="The site kit (its approved-apps.toml is changed).")
]


@app.command("keygen", no_args_is_help=True)
@reports_errors
def site_keygen(
    out: Annotated[
        Path, typer.Option(help="Folder for site.key (private, 0600) and site.pub; created 0700.")
    ],
    comment: Annotated[str, typer.Option(help="A label in site.pub, e.g. the site's name.")] = "",
) -> None:
    """Make this site's key pair here. Send only site.pub to the coordinator; site.key never leaves this host."""
    from deploy.site.trust import make_key_pair

    make_key_pair(out, comment)


@app.command("approve", no_args_is_help=True)
@reports_errors
def site_approve(
    kit: SiteKitOption,
    fab: Annotated[Path, typer.Option("--fab", help="The app bundle (.fab) to review and approve.")],
    yes: Annotated[bool, typer.Option("--yes", help="Approve without asking (scripts).")] = False,
) -> None:
    """Show an app's publisher, version, hash and files; on confirmation, this site runs it.

    Exit 5 (refused) when the approval is declined at the prompt.
    """
    from deploy.site.trust import approve_app

    approve_app(kit, fab, None if yes else lambda question: typer.confirm(question, default=False))


@app.command("apps", no_args_is_help=True)
@reports_errors
def site_apps(kit: SiteKitOption) -> None:
    """The apps this site runs (their SHA-256), with who approved them and when."""
    from deploy.site.trust import list_approved_apps

    list_approved_apps(kit)


@app.command("revoke-app", no_args_is_help=True)
@reports_errors
def site_revoke_app(
    kit: SiteKitOption,
    hash_: Annotated[
        str, typer.Option("--hash", help="The app's SHA-256 (or a unique prefix of 8+ digits).")
    ],
) -> None:
    """This site no longer runs the app (from its next task on)."""
    from deploy.site.trust import revoke_app

    revoke_app(kit, hash_)
