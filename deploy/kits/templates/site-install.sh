#!/bin/sh
# Install OncoFed site "@@{site}" (federation "@@{federation}") from this kit. As root, once; safe to run again.
#
#   ./install.sh                 the site user, its folders, the Python environment (offline from wheels/ when
#                                the kit has it, else from an index against requirements.lock), the systemd unit
#                                (installed, not enabled)
#   ./install.sh --keygen-only   only the site's key pair, in PREFIX/keys (nothing installed; needs python3 and
#                                the kit's wheels/, or ssh-keygen)
#
# Options: --prefix DIR (default @@{install_root}), --user NAME (default oncofed), --no-user (install for the
# current user: no user created, nothing chowned), --python PATH (default python@@{python_version}),
# --systemd-dir DIR (default /etc/systemd/system), --no-systemd, --torch-index URL|none (index installs only;
# default @@{torch_index}).
# Every failure is one line starting with `error:` that names what to fix.
set -eu
umask 022
unset PYTHONPATH PYTHONHOME  # the site's environment holds only the kit's packages

KIT="$(cd "$(dirname "$0")" && pwd)"
PREFIX=@@{install_root}
SITE_USER=oncofed
MAKE_USER=1
PYTHON=python@@{python_version}
SYSTEMD_DIR=/etc/systemd/system
SYSTEMD=1
TORCH_INDEX=@@{torch_index}
KEYGEN_ONLY=0

fail() {
    echo "error: $*" >&2
    exit 1
}

needs_value() {
    [ "$#" -ge 2 ] && [ -n "$2" ] || fail "$1 needs a value (see the top of $KIT/install.sh)"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --prefix) needs_value "$@"; PREFIX="$2"; shift 2 ;;
        --user) needs_value "$@"; SITE_USER="$2"; shift 2 ;;
        --no-user) MAKE_USER=0; shift ;;
        --python) needs_value "$@"; PYTHON="$2"; shift 2 ;;
        --systemd-dir) needs_value "$@"; SYSTEMD_DIR="$2"; shift 2 ;;
        --no-systemd) SYSTEMD=0; shift ;;
        --torch-index) needs_value "$@"; TORCH_INDEX="$2"; shift 2 ;;
        --keygen-only) KEYGEN_ONLY=1; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option $1 (see the top of $KIT/install.sh)" ;;
    esac
done
case "$PREFIX" in
    /*) ;;
    *) fail "--prefix $PREFIX: give an absolute path" ;;
esac
VENV="$PREFIX/venv"
KEYS="$PREFIX/keys"

if [ "$MAKE_USER" = 1 ]; then
    [ "$(id -u)" = 0 ] || fail "run as root (sudo $0), or with --no-user --prefix DIR to install for this user only"
fi

# owned DIR MODE: create DIR (if missing) with MODE, owned by the site user
owned() {
    mkdir -p "$1" || fail "cannot create $1: check that $(dirname "$1") is writable"
    chmod "$2" "$1" || fail "cannot set mode $2 on $1"
    if [ "$MAKE_USER" = 1 ]; then
        chown "$SITE_USER:$SITE_USER" "$1" || fail "cannot give $1 to $SITE_USER"
    fi
}

make_user() {
    [ "$MAKE_USER" = 1 ] || return 0
    if id -u "$SITE_USER" >/dev/null 2>&1; then return 0; fi
    command -v useradd >/dev/null 2>&1 || fail "useradd not found: create the user $SITE_USER yourself, then run this again"
    useradd --system --user-group --create-home --shell /usr/sbin/nologin "$SITE_USER" \
        || fail "useradd $SITE_USER failed: create the user yourself, then run this again"
}

keygen() {
    owned "$KEYS" 700
    if [ -f "$KEYS/site.key" ] && [ -f "$KEYS/site.pub" ]; then
        echo "kept: the key pair in $KEYS (send $KEYS/site.pub to the coordinator; site.key never leaves this host)"
        return 0
    fi
    if [ -e "$KEYS/site.key" ] || [ -e "$KEYS/site.pub" ]; then
        fail "$KEYS holds only half a key pair: move site.key and site.pub away, or restore the missing one"
    fi
    KEYGEN_PYTHON="$(command -v "$PYTHON" || command -v python3 || true)"
    if ls "$KIT/@@{wheels_dir}"/cryptography-*.whl >/dev/null 2>&1 && [ -n "$KEYGEN_PYTHON" ]; then
        "$KEYGEN_PYTHON" - "$KIT/@@{wheels_dir}" "$KEYS" "@@{site}" <<'PY' || fail "making the key pair with the kit's cryptography wheel failed: use ssh-keygen -t ecdsa -b 384 -N '' -f $KEYS/site.key instead"
import base64, glob, hashlib, os, sys, tempfile, zipfile

wheels, keys, comment = sys.argv[1:]
unpacked = tempfile.mkdtemp(prefix="oncofed-keygen-")
for pattern in ("cryptography-*.whl", "cffi-*.whl", "pycparser-*.whl"):
    for wheel in glob.glob(os.path.join(wheels, pattern)):
        zipfile.ZipFile(wheel).extractall(unpacked)
sys.path.insert(0, unpacked)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

key = ec.generate_private_key(ec.SECP384R1())
private = key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
)
public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
for name, data, mode in (("site.key", private, 0o600), ("site.pub", public + b" " + comment.encode() + b"\n", 0o644)):
    fd = os.open(os.path.join(keys, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
blob = base64.b64decode(public.split()[1])
print("fingerprint SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("="))
PY
    elif command -v ssh-keygen >/dev/null 2>&1; then
        ssh-keygen -q -t ecdsa -b 384 -N "" -C "@@{site}" -f "$KEYS/site.key" || fail "ssh-keygen failed to write $KEYS/site.key"
        mv "$KEYS/site.key.pub" "$KEYS/site.pub"
    else
        fail "neither python3 with this kit's wheels/ nor ssh-keygen is available: install openssh-client, or run this from a kit made with --wheelhouse"
    fi
    if [ "$MAKE_USER" = 1 ]; then
        chown "$SITE_USER:$SITE_USER" "$KEYS/site.key" "$KEYS/site.pub" || fail "cannot give the key pair to $SITE_USER"
    fi
    echo "made: $KEYS/site.key (stays here, mode 600) and $KEYS/site.pub: send site.pub to the coordinator"
}

make_user
if [ "$KEYGEN_ONLY" = 1 ]; then
    keygen
    exit 0
fi

# The Python the kit's wheels were made for.
command -v "$PYTHON" >/dev/null 2>&1 \
    || fail "$PYTHON not found: install Python @@{python_version} with its venv module (Debian: apt-get install python@@{python_version} python@@{python_version}-venv), or name it with --python PATH"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (@@{python_tuple}))' \
    || fail "$PYTHON is not Python @@{python_version}, the version this kit's wheels are for: give --python PATH"
[ -f "$KIT/@@{lock_file}" ] || fail "$KIT/@@{lock_file} is missing: ask the coordinator for the kit again (oncofed provision writes it)"

# Folders: the install root (root's), the kit and the work folder (the site's), the keys (the site's, 700).
mkdir -p "$PREFIX" || fail "cannot create $PREFIX: check that its parent folder exists and is writable"
chmod 755 "$PREFIX" || fail "cannot set mode 755 on $PREFIX"
owned "$KEYS" 700
if [ "$MAKE_USER" = 1 ]; then
    chown -R "$SITE_USER:$SITE_USER" "$KEYS" || fail "cannot give $KEYS to $SITE_USER"
fi
owned "$PREFIX/work" 700

# The kit, without its wheels, into PREFIX/kit; the site's own files there (site.toml, approvals) are kept.
if [ "$KIT" != "$PREFIX/kit" ]; then
    STAGE="$(mktemp -d "$PREFIX/.kit.XXXXXX")" || fail "cannot write into $PREFIX"
    for entry in "$KIT"/* "$KIT"/.dockerignore; do
        [ -e "$entry" ] || continue
        if [ "$(basename "$entry")" = "@@{wheels_dir}" ]; then continue; fi
        cp -R "$entry" "$STAGE/" || fail "cannot copy $entry into $PREFIX/kit: check the free space on $PREFIX"
    done
    for own in site.toml @@{approved_apps}; do
        if [ -f "$PREFIX/kit/$own" ]; then cp -p "$PREFIX/kit/$own" "$STAGE/$own"; fi
    done
    rm -rf "$PREFIX/.kit.old"
    if [ -d "$PREFIX/kit" ]; then mv "$PREFIX/kit" "$PREFIX/.kit.old"; fi
    mv "$STAGE" "$PREFIX/kit" || fail "cannot put the kit into $PREFIX/kit"
    rm -rf "$PREFIX/.kit.old"
fi
chmod 750 "$PREFIX/kit"
if [ "$MAKE_USER" = 1 ]; then
    chown -R "$SITE_USER:$SITE_USER" "$PREFIX/kit" || fail "cannot give $PREFIX/kit to $SITE_USER"
fi

# The Python environment (root's: the site user cannot change the code it runs).
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" >/dev/null 2>&1 \
        || fail "$PYTHON -m venv $VENV failed: install the venv module (Debian: apt-get install python@@{python_version}-venv)"
fi
LOG="$PREFIX/install.log"
cd "$KIT"
if [ -d "@@{wheels_dir}" ]; then
    WHERE="offline, from $KIT/@@{wheels_dir}"
    set -- --no-index --find-links @@{wheels_dir}
else
    WHERE="from the package index"
    set --
    [ "$TORCH_INDEX" = none ] || set -- --extra-index-url "$TORCH_INDEX"
fi
echo "installing OncoFed @@{oncofed_version} into $VENV ($WHERE) ..."
if ! "$VENV/bin/pip" install --disable-pip-version-check --require-hashes "$@" -r @@{lock_file} >"$LOG" 2>&1; then
    reason="$(grep -E '^ERROR' "$LOG" | head -n 1)"
    fail "pip could not install the kit's packages (${reason:-see the log}); full output in $LOG. A hash that does not match means the kit was changed after provisioning: get it again from the coordinator"
fi
"$VENV/bin/oncofed" --help >/dev/null 2>&1 || fail "$VENV/bin/oncofed does not run after the install: see $LOG"

# The systemd unit, for this prefix and user; installed, not enabled.
if [ "$SYSTEMD" = 1 ]; then
    mkdir -p "$SYSTEMD_DIR" || fail "cannot create $SYSTEMD_DIR"
    if [ "$MAKE_USER" = 1 ]; then
        sed -e "s#@@{install_root}#$PREFIX#g" -e "s#^User=.*#User=$SITE_USER#" -e "s#^Group=.*#Group=$SITE_USER#" \
            "$KIT/oncofed-site.service" >"$SYSTEMD_DIR/oncofed-site.service"
    else
        sed -e "s#@@{install_root}#$PREFIX#g" -e "/^User=/d" -e "/^Group=/d" \
            "$KIT/oncofed-site.service" >"$SYSTEMD_DIR/oncofed-site.service"
    fi || fail "cannot write $SYSTEMD_DIR/oncofed-site.service"
    if [ "$SYSTEMD_DIR" = /etc/systemd/system ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload || fail "systemctl daemon-reload failed: run it yourself"
    fi
fi

echo "installed: $VENV/bin/oncofed, kit in $PREFIX/kit, work folder $PREFIX/work, keys in $KEYS"
[ -f "$KEYS/site.key" ] || echo "note: no key pair in $KEYS yet: copy the site.key made before the kit there (chmod 600), or run $0 --keygen-only for a new one (the coordinator then needs the new site.pub)"
echo "next: oncofed site setup --kit $PREFIX/kit"
