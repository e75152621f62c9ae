"""A site's own say: which apps it runs, and its key pair.

    oncofed site keygen --out DIR                      the site's key pair, made at the hospital
    oncofed site approve --kit DIR --fab FILE [--yes]  review an app and add its hash to the allow-list
    oncofed site apps --kit DIR                        the approved apps
    oncofed site revoke-app --kit DIR --hash H         remove one

`oncofed_cli` puts `app` in the `site` group. Flower, the FAB
reader and cryptography load when a command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.shared.exit_codes import ExitCode, fail

app = typer.Typer()
"""The site's commands: keygen, approve, apps, revoke-app."""

SiteKitOption = Annotated[
    Path, typer.Option("--kit", help="The site kit (its approved-apps.toml is changed).")
]


def _site_allow_list(kit: Path) -> Path:
    """The allow-list of the site kit in `kit` (only kit.toml must be readable: site.toml may be unfilled)."""
    from deploy.kits.contents import APPROVED_APPS_FILE, KIT_FILE, KitError, read_toml

    try:
        manifest = read_toml(kit / KIT_FILE, f"{kit} is not a site kit (the coordinator makes one)")
    except KitError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    if manifest.get("kind") != "site":
        raise fail(f"{kit / KIT_FILE} is not a site kit's; pass the site kit folder", ExitCode.BAD_INPUT)
    return kit / APPROVED_APPS_FILE


@app.command("keygen", no_args_is_help=True)
def site_keygen(
    out: Annotated[
        Path, typer.Option(help="Folder for site.key (private, 0600) and site.pub; created 0700.")
    ],
    comment: Annotated[str, typer.Option(help="A label in site.pub, e.g. the site's name.")] = "",
) -> None:
    """Make this site's key pair here. Send only site.pub to the coordinator; site.key never leaves this host."""
    from deploy.kits.site_keys import KeygenError, generate_site_keys
    from models.shared.terminal import make_console

    try:
        pair = generate_site_keys(out, comment)
    except KeygenError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    make_console(highlight=False, soft_wrap=True).print(
        f"Private key: {pair.private} (mode 0600): keep it here; set site.toml's private-key to it.\n"
        f"Public key:  {pair.public}: send this file to the coordinator.\n"
        f"Fingerprint: {pair.fingerprint} (confirm it with the coordinator by phone or another channel).",
        markup=False,
    )


@app.command("approve", no_args_is_help=True)
def site_approve(
    kit: SiteKitOption,
    fab: Annotated[Path, typer.Option("--fab", help="The app bundle (.fab) to review and approve.")],
    yes: Annotated[bool, typer.Option("--yes", help="Approve without asking (scripts).")] = False,
) -> None:
    """Show an app's publisher, version, hash and files; on confirmation, this site runs it.

    Exit 5 (refused) when the approval is declined at the prompt.
    """
    from deploy.kits.app_approval import ApprovalError, approval_of, approve, current_user, read_allow_list
    from deploy.kits.release_fab import FabError, read_fab
    from models.shared.terminal import make_console

    console = make_console(highlight=False, soft_wrap=True)
    allow_list = _site_allow_list(kit)
    try:
        _, info = read_fab(fab)
    except FabError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    width = max((len(file.path) for file in info.files), default=0)
    listing = [f"{fab}: the code this site would run"]
    listing += [f"  {f.path:<{width}}  {f.size:>8} bytes  sha256 {f.sha256[:16]}…" for f in info.files]
    listing += [
        f"publisher: {info.publisher}",
        f"app: {info.name} {info.version}",
        f"sha256: {info.sha256}",
        f"files: {len(info.files)} (plus pyproject.toml's run settings: {', '.join(sorted(info.config_keys))})",
    ]
    console.print("\n".join(listing), markup=False)
    try:
        if info.sha256 in {app.sha256 for app in read_allow_list(allow_list)}:
            console.print(f"Already approved in {allow_list}.", markup=False)
            return
        if not yes and not typer.confirm(f"Approve this app for this site ({allow_list})?", default=False):
            raise fail("not approved; nothing changed", ExitCode.REFUSED)
        approve(allow_list, approval_of(info, current_user(), f"approved from {fab.name}"))
    except ApprovalError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    console.print(f"Approved: this site runs sha256 {info.sha256} from its next task on.")


@app.command("apps", no_args_is_help=True)
def site_apps(kit: SiteKitOption) -> None:
    """The apps this site runs (their SHA-256), with who approved them and when."""
    from deploy.kits.app_approval import ApprovalError, read_allow_list
    from models.shared.terminal import make_console

    console = make_console(highlight=False, soft_wrap=True)
    allow_list = _site_allow_list(kit)
    try:
        apps = read_allow_list(allow_list)
    except ApprovalError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    if not apps:
        console.print(f"No app is approved in {allow_list}: this site runs nothing.", markup=False)
        return
    listing = [f"{allow_list}: {len(apps)} approved app(s)"]
    for app_ in apps:
        listing.append(
            f"{app_.sha256}  {app_.publisher}/{app_.name} {app_.version}  approved {app_.approved_at} by "
            f"{app_.approved_by}"
        )
        if app_.note:
            listing.append(f"    {app_.note}")
    console.print("\n".join(listing), markup=False)


@app.command("revoke-app", no_args_is_help=True)
def site_revoke_app(
    kit: SiteKitOption,
    hash_: Annotated[
        str, typer.Option("--hash", help="The app's SHA-256 (or a unique prefix of 8+ digits).")
    ],
) -> None:
    """This site no longer runs the app (from its next task on)."""
    from deploy.kits.app_approval import ApprovalError, revoke
    from models.shared.terminal import make_console

    allow_list = _site_allow_list(kit)
    try:
        removed = revoke(allow_list, hash_)
    except ApprovalError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    make_console(highlight=False, soft_wrap=True).print(
        f"Removed {removed.publisher}/{removed.name} {removed.version} (sha256 {removed.sha256}) from {allow_list}.",
        markup=False,
    )
