#!/usr/bin/env bash
# Installs the servers and programs that the test suite starts by itself.
#
# PostgreSQL: the tests (tests/_postgres.py) run initdb and pg_ctl from
# /usr/lib/postgresql/<version>/bin in a temporary directory on a free loopback
# port, so all that is needed here is Debian's server package. The Debian
# cluster service is neither used nor started. S3 is emulated by moto, a pip
# package installed with the test extra, so it needs nothing here.
#
# Chromium: the inspector's browser tests (tests/test_ui_browser.py) drive
# Debian's headless Chromium through its chromedriver, both at /usr/bin from
# the apt packages chromium and chromium-driver (Selenium is given the driver's
# path, so it never downloads a browser or a driver).
#
# Idempotent and quick when everything is installed already.
set -euo pipefail

log() { printf 'test-services: %s\n' "$*"; }

# Newest directory that holds both initdb and pg_ctl, or nothing.
find_postgres_bin() {
    local dir best="" best_version=-1 version
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]] || continue
        version=$(basename "$(dirname "$dir")")
        version=${version%%.*}
        [[ "$version" =~ ^[0-9]+$ ]] || continue
        if ((version > best_version)); then
            best=$dir
            best_version=$version
        fi
    done
    [[ -n "$best" ]] && printf '%s\n' "$best"
    return 0
}

# Refuse, saying what to install by hand, when this script cannot install ($1: what, $2: packages).
require_apt() {
    if [[ $(id -u) -ne 0 ]]; then
        log "$1 missing; run this script as root or install them yourself: apt-get install $2"
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "$1 missing and apt-get is not available; install your system's $2, then rerun"
        exit 1
    fi
}

apt_updated=0
apt_update_once() {
    if ((apt_updated == 0)); then
        log "apt-get update"
        apt-get update
        apt_updated=1
    fi
}

install_postgres() {
    # Debian's maintainer scripts start the new cluster through invoke-rc.d, which
    # asks /usr/sbin/policy-rc.d first: exit code 101 means "do not start". The
    # tests never use that cluster, so keep it from running while we install,
    # unless the machine already has a policy of its own.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
        trap 'rm -f "$policy"' EXIT
    fi

    export DEBIAN_FRONTEND=noninteractive
    apt_update_once
    log "installing PostgreSQL: apt-get install -y postgresql"
    apt-get install -y postgresql

    if ((own_policy)); then
        rm -f "$policy"
        trap - EXIT
    fi

    local bin_dir
    bin_dir=$(find_postgres_bin)
    if [[ -z "$bin_dir" ]]; then
        log "apt-get installed postgresql but no initdb/pg_ctl exists under /usr/lib/postgresql/*/bin"
        exit 1
    fi
    if ! id postgres >/dev/null 2>&1; then
        log "the 'postgres' system user is missing after the install; the tests need it"
        exit 1
    fi
    log "PostgreSQL server binaries installed in $bin_dir (the tests start their own instance)"
}

install_chromium() {
    require_apt "Chromium or its driver (/usr/bin/chromium, /usr/bin/chromedriver)" \
        "chromium chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    apt_update_once
    log "installing Chromium: apt-get install -y chromium chromium-driver"
    apt-get install -y chromium chromium-driver
    if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
        log "apt-get installed chromium and chromium-driver but /usr/bin/chromium or /usr/bin/chromedriver is missing"
        exit 1
    fi
    log "Chromium installed: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
}

bin_dir=$(find_postgres_bin)
if [[ -n "$bin_dir" ]]; then
    log "PostgreSQL server binaries found in $bin_dir; nothing to install"
else
    require_apt "PostgreSQL server binaries (initdb, pg_ctl)" "postgresql"
    install_postgres
fi

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    log "Chromium and chromedriver found in /usr/bin; nothing to install"
else
    install_chromium
fi
