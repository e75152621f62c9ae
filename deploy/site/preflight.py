"""Pre-flight checks of a site kit, run by `oncofed site check --kit DIR` and before `oncofed site start`.

Each check returns one result with a distinct problem code and a message that names the file or address,
what was found, what was expected and what to do: hospital IT should not need to read Flower's logs to learn
that the kit's CA is not the coordinator's, or that a firewall drops the traffic.
"""

import http.client
import os
import socket
import ssl
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Literal

from cryptography import x509

from deploy.kits import certificates as certs
from deploy.kits.app_approval import ApprovalError, read_allow_list
from deploy.kits.contents import KitError, SiteKit, read_site_kit
from site_app.disclosure.policy import DisclosurePolicy

CONNECT_TIMEOUT_S = 5.0
Status = Literal["ok", "warning", "error"]

# OpenSSL verification codes (X509_V_ERR_*) and what they mean for a site
_WRONG_CA = {18, 19, 20, 21, 2}  # self-signed, self-signed in chain, unknown issuer (x2), issuer cert missing
_EXPIRED = {10}
_NOT_YET_VALID = {9}
_NAME_MISMATCH = {62, 64}  # hostname mismatch, IP address mismatch


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    message: str
    problem: str | None = None
    """A stable code for what is wrong (`wrong-ca`, `name-mismatch`, `expired-certificate`, `connection-refused`,
    `timeout`, `key-mismatch`, `flwr-version`, …); None when the check passed."""


def check_kit(kit_dir: Path, timeout_s: float = CONNECT_TIMEOUT_S) -> list[CheckResult]:
    """Every check of the site kit in `kit_dir`; an unreadable kit stops after the first result."""
    try:
        kit = read_site_kit(kit_dir)
    except KitError as error:
        return [CheckResult("kit files", "error", str(error), "kit-invalid")]
    results = [
        CheckResult("kit files", "ok", f"{kit.root}: site {kit.site_name!r} of federation {kit.federation!r}")
    ]
    results += [
        check_site_key(kit),
        check_approved_apps(kit),
        check_ca_certificate(kit),
        check_flwr_version(kit.flwr_version),
        *check_folders(kit),
        check_disclosure_thresholds(kit),
        check_coordinator(
            kit.settings.coordinator_host, kit.settings.coordinator_port, kit.ca_certificate, timeout_s
        ),
    ]
    return results


def check_disclosure_thresholds(kit: SiteKit) -> CheckResult:
    """The site's disclosure thresholds; a warning naming each one set below its default (site.toml confirmed it
    with `i-understand = true`, else the kit would not have been read)."""
    policy = DisclosurePolicy.from_node_config(kit.settings.node_config())
    lowered = policy.lowered()
    if lowered:
        return CheckResult(
            "disclosure thresholds",
            "warning",
            f"below their defaults (i-understand = true): {'; '.join(lowered)}",
            "lowered-thresholds",
        )
    return CheckResult(
        "disclosure thresholds",
        "ok",
        f"min-report-cases {policy.min_report_cases}, min-position-cases {policy.min_position_cases},"
        f" min-train-cases {policy.min_train_cases}, min-lesion-mm3 {policy.min_lesion_mm3:g}",
    )


def check_site_key(kit: SiteKit) -> CheckResult:
    """The private key named in site.toml parses, is the kit's key (the one whose public half the coordinator was
    given, by fingerprint), and is private (0600). Whether the coordinator registered it is known only there."""
    path = kit.private_key
    if not path.exists():
        return CheckResult(
            "site key",
            "error",
            f"site.toml private-key {path} does not exist; set it to this site's site.key (made here with "
            "`oncofed site keygen`; its public half is the one the coordinator was given)",
            "key-missing",
        )
    try:
        key = certs.load_site_private_key(path)
    except certs.KeyFileError as error:
        problem = "key-unreadable" if "cannot be read" in str(error) else "key-invalid"
        return CheckResult("site key", "error", f"site.toml private-key: {error}", problem)
    fingerprint = certs.key_fingerprint(key.public_key())
    if fingerprint != kit.key_fingerprint:
        return CheckResult(
            "site key",
            "error",
            f"{path} has fingerprint {fingerprint}, but this kit was made for the key {kit.key_fingerprint} of "
            f"site {kit.site_name!r}: this is not the kit's key. Set site.toml private-key to the key whose .pub "
            "was sent to the coordinator, or send the coordinator this key's .pub for a new kit",
            "key-mismatch",
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return CheckResult(
            "site key",
            "error",
            f"{path} is readable by other users (mode {mode:04o}): anyone who can read it can connect as this "
            f"site; run `chmod 600 {path}` (and `chown` it to the site's user)",
            "key-permissions",
        )
    note = " (a test key, generated by the coordinator)" if kit.test_key else ""
    return CheckResult("site key", "ok", f"{path}: the kit's key ({fingerprint}){note}")


def check_approved_apps(kit: SiteKit) -> CheckResult:
    """The site's allow-list parses; a site that approves nothing refuses every run (allowed, but said)."""
    try:
        apps = read_allow_list(kit.allow_list)
    except ApprovalError as error:
        return CheckResult("approved apps", "error", str(error), "allow-list-invalid")
    if not apps:
        return CheckResult(
            "approved apps",
            "warning",
            f"no app is approved in {kit.allow_list}: this site refuses every run; approve one with "
            "`oncofed site approve`",
            "no-app-approved",
        )
    return CheckResult(
        "approved apps",
        "ok",
        f"{len(apps)} app(s) approved in {kit.allow_list}: {', '.join(app.sha256[:12] + '…' for app in apps)}",
    )


def check_ca_certificate(kit: SiteKit) -> CheckResult:
    try:
        ca = certs.load_certificate(kit.ca_certificate)
    except certs.KeyFileError as error:
        return CheckResult(
            "CA certificate",
            "error",
            f"{error}; restore certs/ca.crt from the kit you received",
            "ca-invalid",
        )
    return _expiry_result(
        "CA certificate", f"{kit.ca_certificate}", ca, "the federation must be provisioned anew before then"
    )


def _expiry_result(check: str, what: str, certificate: x509.Certificate, remedy: str) -> CheckResult:
    days = certs.days_left(certificate)
    until = certificate.not_valid_after_utc.date().isoformat()
    if days < 0:
        return CheckResult(check, "error", f"{what} expired on {until}; {remedy}", "expired-certificate")
    if days < certs.EXPIRY_WARNING_DAYS:
        return CheckResult(
            check,
            "warning",
            f"{what} expires on {until}, in {days:.0f} days; {remedy}",
            "expiring-certificate",
        )
    return CheckResult(check, "ok", f"{what} valid until {until}")


def check_flwr_version(expected: str) -> CheckResult:
    installed = version("flwr")
    if installed != expected:
        return CheckResult(
            "flwr version",
            "error",
            f"flwr {installed} is installed but the kit was made for flwr {expected}; install it "
            f"with `pip install flwr=={expected}` (every member of a federation runs the same "
            "Flower)",
            "flwr-version",
        )
    return CheckResult("flwr version", "ok", f"flwr {installed}, as the kit expects")


def check_folders(kit: SiteKit) -> list[CheckResult]:
    """data-path readable, work-path writable and outside it; the deeper data checks are the data pre-flight's."""
    settings = kit.settings
    data, work = settings.data_path, settings.work_path
    if not data.is_dir():
        data_result = CheckResult(
            "data folder",
            "error",
            f"site.toml data-path {data} does not exist or is not a "
            "folder; set it to the folder holding the studies",
            "data-missing",
        )
    elif not os.access(data, os.R_OK | os.X_OK):
        data_result = CheckResult(
            "data folder",
            "error",
            f"site.toml data-path {data} is not readable by this user; grant read access",
            "data-unreadable",
        )
    else:
        data_result = CheckResult("data folder", "ok", f"{data} is readable")
    existing = next((p for p in (work, *work.parents) if p.exists()), None)
    if work.resolve().is_relative_to(data.resolve()):
        work_result = CheckResult(
            "work folder",
            "error",
            f"site.toml work-path {work} lies inside data-path "
            f"{data}, which must stay read-only; choose a folder outside it",
            "work-in-data",
        )
    elif existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        work_result = CheckResult(
            "work folder",
            "error",
            f"site.toml work-path {work} cannot be created or written "
            f"by this user ({existing} is not writable); create it and grant write access",
            "work-unwritable",
        )
    else:
        work_result = CheckResult("work folder", "ok", f"{work} is writable")
    return [data_result, work_result]


def check_coordinator(
    host: str, port: int, ca_certificate: Path, timeout_s: float = CONNECT_TIMEOUT_S
) -> CheckResult:
    """Connect over TLS with the kit's CA (as the SuperNode will) and ask the SuperLink's /health."""
    address = f"{host}:{port}"
    context = ssl.create_default_context(cafile=str(ca_certificate))
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=timeout_s)
    try:
        connection.request("GET", "/health")
        peer = x509.load_der_x509_certificate(connection.sock.getpeercert(binary_form=True))
        status = connection.getresponse().status
    except ssl.SSLCertVerificationError as error:
        return _verification_failure(address, host, port, ca_certificate, error, timeout_s)
    except ConnectionRefusedError:
        return CheckResult(
            "coordinator",
            "error",
            f"connection refused by {address}: nothing listens there. Is the coordinator running, and "
            "is the port in site.toml `coordinator` right?",
            "connection-refused",
        )
    except TimeoutError:
        return CheckResult(
            "coordinator",
            "error",
            f"no answer from {address} within {timeout_s:.0f} s: a firewall may be dropping the "
            f"traffic, or the address is wrong. The site needs outbound TCP to {address}",
            "timeout",
        )
    except socket.gaierror as error:
        return CheckResult(
            "coordinator",
            "error",
            f"cannot resolve {host!r} ({error.strerror}); check site.toml "
            "`coordinator` and this machine's DNS",
            "name-unresolved",
        )
    except (ssl.SSLError, http.client.HTTPException, ConnectionError) as error:
        return CheckResult(
            "coordinator",
            "error",
            f"{address} did not complete a TLS exchange ({error}); is that the coordinator's port?",
            "not-tls",
        )
    except OSError as error:
        return CheckResult(
            "coordinator", "error", f"cannot reach {address}: {error.strerror or error}", "unreachable"
        )
    finally:
        connection.close()
    if status != 200:
        return CheckResult(
            "coordinator",
            "error",
            f"{address} answered TLS but its /health returned HTTP {status}; "
            "is that the OncoFed coordinator?",
            "not-superlink",
        )
    return _expiry_result(
        "coordinator",
        f"{address}: reachable over TLS; its certificate",
        peer,
        "the coordinator must renew it (re-run `oncofed provision`)",
    )


def _verification_failure(
    address: str,
    host: str,
    port: int,
    ca_certificate: Path,
    error: ssl.SSLCertVerificationError,
    timeout_s: float,
) -> CheckResult:
    peer = _unverified_peer_certificate(host, port, timeout_s)
    if error.verify_code in _EXPIRED:
        until = peer.not_valid_after_utc.date().isoformat() if peer else "an earlier date"
        return CheckResult(
            "coordinator",
            "error",
            f"the coordinator's certificate at {address} expired on {until}; "
            "the coordinator must renew it (re-run `oncofed provision` with the same spec and output "
            "folder, then restart the coordinator)",
            "expired-certificate",
        )
    if error.verify_code in _NOT_YET_VALID:
        return CheckResult(
            "coordinator",
            "error",
            f"the coordinator's certificate at {address} is not valid yet: "
            "this machine's clock or the coordinator's is wrong; fix the clock (NTP)",
            "clock",
        )
    if error.verify_code in _NAME_MISMATCH:
        names = ", ".join(certs.certificate_names(peer)) if peer else "unknown names"
        return CheckResult(
            "coordinator",
            "error",
            f"the coordinator's certificate is not valid for {host!r} (it "
            f"names: {names}); set site.toml `coordinator` to one of those names",
            "name-mismatch",
        )
    if error.verify_code in _WRONG_CA:
        return CheckResult(
            "coordinator",
            "error",
            f"the certificate presented at {address} is not signed by this kit's CA "
            f"({ca_certificate}): OpenSSL says {error.verify_message!r}. The kit and the coordinator "
            "come from different provisionings, or a TLS-inspecting proxy replaces the certificate: "
            "ask the coordinator for the current kit, or exempt this address from TLS inspection",
            "wrong-ca",
        )
    return CheckResult(
        "coordinator",
        "error",
        f"the certificate at {address} was rejected: {error.verify_message}",
        "certificate-rejected",
    )


def _unverified_peer_certificate(host: str, port: int, timeout_s: float) -> x509.Certificate | None:
    """The certificate a server presents, fetched without verification: only to explain a failure."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    except (OSError, ValueError):
        return None
