#!/usr/bin/env bash
# Install the real peers the test suite starts (design.md section 6) from Debian packages.
#
# Idempotent: when every needed binary is already present, apt is skipped entirely.
# Then prints one line per tool with its version. A system service that a package starts on
# install (Orthanc on 4242/8042, Redis on 6379, PostgreSQL on 5432) is left alone: it may be
# somebody else's, and the tests start their own instances on free loopback ports.
#
# Usage: bash scripts/install-test-deps.sh        (as root, or a user with sudo)
set -euo pipefail

PACKAGES=(dcmtk orthanc orthanc-dicomweb dicom3tools redis-server postgresql docker-compose chromium)

# One binary per package, proving the package is installed.
REQUIRED_BINARIES=(
  /usr/bin/storescu /usr/bin/storescp /usr/bin/echoscu /usr/bin/dcmcjpeg /usr/bin/dcmcjpls
  /usr/bin/dsrdump /usr/sbin/Orthanc /usr/bin/dciodvfy /usr/bin/redis-server
  /usr/bin/docker-compose /usr/bin/chromium
)
# Files (not executables) proving a package is installed: Orthanc's DICOMweb plugin
# (the DICOMweb exporter's test peer, and the OHIF browser test's).
REQUIRED_FILES=(/usr/share/orthanc/plugins/libOrthancDicomWeb.so)

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "install-test-deps: need root or sudo to run: $*" >&2
    exit 1
  fi
}

postgres_bindir() {
  # Newest installed major version, e.g. /usr/lib/postgresql/15/bin.
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$dir" && -x "$dir/postgres" && -x "$dir/initdb" ]] && echo "$dir"
  return 0
}

all_present() {
  local bin
  for bin in "${REQUIRED_BINARIES[@]}"; do
    [[ -x "$bin" ]] || return 1
  done
  for file in "${REQUIRED_FILES[@]}"; do
    [[ -e "$file" ]] || return 1
  done
  [[ -n "$(postgres_bindir)" ]]
}

install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
}

print_versions() {
  local pgbin
  pgbin="$(postgres_bindir)"
  echo "dcmtk:          $(/usr/bin/storescu --version 2>&1 | head -n 1)"
  echo "orthanc:        $(/usr/sbin/Orthanc --version 2>&1 | head -n 1)"
  echo "dicom3tools:    $(/usr/bin/dciodvfy -version 2>&1 | head -n 1)"
  echo "redis-server:   $(/usr/bin/redis-server --version 2>&1 | head -n 1)"
  echo "postgresql:     $("$pgbin/postgres" --version 2>&1 | head -n 1) ($pgbin)"
  echo "docker-compose: $(/usr/bin/docker-compose --version 2>&1 | head -n 1)"
  # The Debian launcher script prints a harmless shell warning on stderr; keep stdout only.
  echo "chromium:       $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
}

OHIF_APP_VERSION=3.13.2
OHIF_APP_INTEGRITY="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="

# The viewer's own DICOM code (dcmjs, @cornerstonejs/adapters at OHIF 3.13.2's versions) for
# tests/test_viewer_*.py: Node.js from Debian (a newer node already on PATH is kept), the
# npm packages pinned by tests/viewer/package-lock.json (dcmjs, adapters, puppeteer-core for
# Debian's chromium), installed into tests/viewer/.
install_viewer_packages() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/viewer"
  if ! command -v node >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends nodejs
  fi
  if ! command -v npm >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -qq --no-install-recommends npm
  fi
  if [[ ! -d "$dir/node_modules/@cornerstonejs/adapters" ]]; then
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts)
  fi
  # OHIF's built viewer for tests/test_viewer_ohif.py: the npm tarball's dist/, checked
  # against the registry's sha512 pinned here, unpacked into tests/viewer/ohif-dist.
  if [[ ! -f "$dir/ohif-dist/index.html" ]]; then
    local tmp want got
    tmp="$(mktemp -d)"
    want="${OHIF_APP_INTEGRITY#sha512-}"
    (cd "$tmp" && npm pack --silent "@ohif/app@${OHIF_APP_VERSION}" >/dev/null)
    got="$(openssl dgst -sha512 -binary "$tmp/ohif-app-${OHIF_APP_VERSION}.tgz" | base64 -w0)"
    if [[ "$got" != "$want" ]]; then
      echo "install-test-deps: @ohif/app ${OHIF_APP_VERSION} tarball does not match its pinned sha512" >&2
      rm -rf "$tmp"
      exit 1
    fi
    mkdir -p "$dir/ohif-dist"
    tar xzf "$tmp/ohif-app-${OHIF_APP_VERSION}.tgz" -C "$dir/ohif-dist" --strip-components=2 package/dist
    rm -rf "$tmp"
  fi
  echo "node:           $(node --version) (tests/viewer: $(cd "$dir" && node -p "require('./package.json').dependencies['@cornerstonejs/adapters']") adapters)"
}

main() {
  if all_present; then
    echo "install-test-deps: all binaries present, skipping apt"
  else
    install_packages
    if ! all_present; then
      echo "install-test-deps: packages installed but a required binary is missing" >&2
      exit 1
    fi
  fi
  print_versions
  install_viewer_packages
}

main "$@"
