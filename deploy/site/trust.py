"""What a site trusts, in the commands that change it: its own key pair (`site keygen`) and the apps it runs, by
the FAB's SHA-256 in the kit's approved-apps.toml (`site approve`, `site apps`, `site revoke-app`; the gate reads
the same file before it starts any app)."""

from collections.abc import Callable
from pathlib import Path

from deploy.kits.app_approval import (
    ApprovalError,
    approval_of,
    approve,
    current_user,
    read_allow_list,
    revoke,
)
from deploy.kits.contents import APPROVED_APPS_FILE, KIT_FILE, KitError, read_toml
from deploy.kits.release_fab import FabError, FabInfo, read_fab
from deploy.kits.site_keys import KeygenError, generate_site_keys
from models.shared.exit_codes import CommandError, ExitCode, errors_as
from models.shared.terminal import make_console


def make_key_pair(out: Path, comment: str) -> None:
    """Write the site's key pair into `out` and say which half goes where."""
    with errors_as(ExitCode.BAD_INPUT, KeygenError):
        pair = generate_site_keys(out, comment)
    make_console(highlight=False, soft_wrap=True).print(
        f"Private key: {pair.private} (mode 0600): keep it here; set site.toml's private-key to it.\n"
        f"Public key:  {pair.public}: send this file to the coordinator.\n"
        f"Fingerprint: {pair.fingerprint} (confirm it with the coordinator by phone or another channel).",
        markup=False,
    )


def site_allow_list(kit: Path) -> Path:
    """The allow-list of the site kit in `kit` (only kit.toml must be readable: site.toml may be unfilled)."""
    with errors_as(ExitCode.BAD_INPUT, KitError):
        manifest = read_toml(kit / KIT_FILE, f"{kit} is not a site kit (the coordinator makes one)")
    if manifest.get("kind") != "site":
        raise CommandError(
            f"{kit / KIT_FILE} is not a site kit's; pass the site kit folder", ExitCode.BAD_INPUT
        )
    return kit / APPROVED_APPS_FILE


def approve_app(kit: Path, fab: Path, ask: Callable[[str], bool] | None) -> None:
    """Show what the app holds, then add its hash to the allow-list once `ask` agrees (None: approved without
    asking); REFUSED when declined."""
    console = make_console(highlight=False, soft_wrap=True)
    allow_list = site_allow_list(kit)
    with errors_as(ExitCode.BAD_INPUT, FabError):
        _, info = read_fab(fab)
    console.print(app_listing(fab, info), markup=False)
    with errors_as(ExitCode.BAD_INPUT, ApprovalError):
        if info.sha256 in {app.sha256 for app in read_allow_list(allow_list)}:
            console.print(f"Already approved in {allow_list}.", markup=False)
            return
        if ask is not None and not ask(f"Approve this app for this site ({allow_list})?"):
            raise CommandError("not approved; nothing changed", ExitCode.REFUSED)
        approve(allow_list, approval_of(info, current_user(), f"approved from {fab.name}"))
    console.print(f"Approved: this site runs sha256 {info.sha256} from its next task on.")


def app_listing(fab: Path, info: FabInfo) -> str:
    """The files of the app with their sizes and hashes, then its publisher, name, version and hash."""
    width = max((len(file.path) for file in info.files), default=0)
    listing = [f"{fab}: the code this site would run"]
    listing += [f"  {f.path:<{width}}  {f.size:>8} bytes  sha256 {f.sha256[:16]}…" for f in info.files]
    listing += [
        f"publisher: {info.publisher}",
        f"app: {info.name} {info.version}",
        f"sha256: {info.sha256}",
        f"files: {len(info.files)} (plus pyproject.toml's run settings: {', '.join(sorted(info.config_keys))})",
    ]
    return "\n".join(listing)


def list_approved_apps(kit: Path) -> None:
    """Print the apps the site runs, with who approved them and when."""
    console = make_console(highlight=False, soft_wrap=True)
    allow_list = site_allow_list(kit)
    with errors_as(ExitCode.BAD_INPUT, ApprovalError):
        apps = read_allow_list(allow_list)
    if not apps:
        console.print(f"No app is approved in {allow_list}: this site runs nothing.", markup=False)
        return
    listing = [f"{allow_list}: {len(apps)} approved app(s)"]
    for app in apps:
        listing.append(
            f"{app.sha256}  {app.publisher}/{app.name} {app.version}  approved {app.approved_at} by {app.approved_by}"
        )
        if app.note:
            listing.append(f"    {app.note}")
    console.print("\n".join(listing), markup=False)


def revoke_app(kit: Path, sha256: str) -> None:
    """Remove the app with this hash (or unique prefix) from the allow-list."""
    allow_list = site_allow_list(kit)
    with errors_as(ExitCode.BAD_INPUT, ApprovalError):
        removed = revoke(allow_list, sha256)
    make_console(highlight=False, soft_wrap=True).print(
        f"Removed {removed.publisher}/{removed.name} {removed.version} (sha256 {removed.sha256}) from {allow_list}.",
        markup=False,
    )
