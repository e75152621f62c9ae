#!/usr/bin/env bash
# The Debian packages the tests use, installed before any test runs (`make test` calls this):
#   chromium       headless browser: the report screenshot test
#   tesseract-ocr  OCR of that screenshot
#   nginx-light    the reverse proxy in front of the SuperLink (deployment tests)
#   dicom3tools    dciodvfy, which checks the DICOM-SEGs `site predict` writes
# Installs what is missing when it can (root and apt-get); otherwise stops with one line naming the packages and the
# command that installs them. Commands are looked up on PATH only (make adds /usr/sbin for nginx).
set -u
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
[ ${#missing[@]} -eq 0 ] && exit 0

fix="apt-get install -y ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the tests need the Debian packages ${missing[*]}; install them as root: sudo $fix" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the tests need the Debian packages ${missing[*]} and apt-get is not available; install them with your package manager (Debian: $fix)" >&2
  exit 1
fi
echo "installing the Debian packages the tests use: ${missing[*]}" >&2
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  echo "error: could not install the Debian packages ${missing[*]} (apt-get failed, see above); install them as root: $fix" >&2
  exit 1
fi
