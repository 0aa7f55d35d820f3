# shellcheck shell=bash
# The Debian and Ubuntu packages this project needs, in groups, and functions that check and install them.
# Source it (it sets no shell options and never exits):
#
#   source scripts/deps.sh
#   deps_missing build web        # prints the missing packages, one a line
#   deps_ensure build web run     # installs the missing ones (root, apt-get); returns non-zero on failure
#
# Groups:
#   build   compile lbd, lbctl, webd and webctl with meson
#   web     the PostgreSQL server for webd (postgresql-15 on Debian 12, the distribution's default elsewhere)
#   run     what the daemons need at run time besides their libraries: CA certificates for HTTPS to EC2,
#           procps for kill(1), which the units' ExecReload= runs, and openssl for the installer's
#           private CA (--tls-private-ca)
#
# Works on Debian 12 and Ubuntu 22.04 and 24.04. On Ubuntu, libhttp-parser-dev and libcjson-dev come from
# the universe component; deps_ensure says so when it is not enabled.

DEPS_GROUP_BUILD=(
    build-essential
    meson
    ninja-build
    pkg-config
    libevent-dev
    libcurl4-openssl-dev
    libssl-dev
    libcjson-dev
    libsystemd-dev
    libhttp-parser-dev
    libxml2-dev
    libpq-dev
    libargon2-dev
)

DEPS_GROUP_RUN=(
    ca-certificates
    curl
    openssl
    procps
)

# Set once apt-get update has run in this shell.
DEPS_APT_UPDATED=${DEPS_APT_UPDATED:-false}

_deps_log() {
    echo "deps: $*" >&2
}

# Prints the ID and VERSION_ID of /etc/os-release as "ID VERSION_ID" (e.g. "debian 12", "ubuntu 24.04").
_deps_os() {
    local id="" version=""
    if [[ -r /etc/os-release ]]; then
        # shellcheck disable=SC1091 # the system's file, not part of this project
        id=$(. /etc/os-release && echo "${ID:-}")
        # shellcheck disable=SC1091
        version=$(. /etc/os-release && echo "${VERSION_ID:-}")
    fi
    echo "${id:-unknown} ${version:-unknown}"
}

# Prints the packages of group <$1>, one a line. Returns 1 for an unknown group.
deps_group_packages() {
    local os
    case "$1" in
        build) printf '%s\n' "${DEPS_GROUP_BUILD[@]}" ;;
        run) printf '%s\n' "${DEPS_GROUP_RUN[@]}" ;;
        web)
            os=$(_deps_os)
            if [[ $os == "debian 12" ]]; then
                echo postgresql-15
            else
                echo postgresql
            fi
            ;;
        *)
            _deps_log "unknown package group '$1' (groups: build, web, run)"
            return 1
            ;;
    esac
}

# True when the Debian package <$1> is installed.
_deps_installed() {
    # shellcheck disable=SC2016 # ${db:Status-Status} is dpkg-query's field, not a shell variable
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# Prints the packages of the groups <$@> that are not installed, one a line, each once.
# Returns 1 for an unknown group or when dpkg is not there.
deps_missing() {
    local group pkg
    local -a pkgs
    local -A seen=()
    if ! command -v dpkg-query >/dev/null 2>&1; then
        _deps_log "dpkg-query not found: this is not a Debian or Ubuntu system"
        return 1
    fi
    for group in "$@"; do
        mapfile -t pkgs < <(deps_group_packages "$group") || return 1
        ((${#pkgs[@]} > 0)) || return 1
        for pkg in "${pkgs[@]}"; do
            [[ -n ${seen[$pkg]:-} ]] && continue
            seen[$pkg]=1
            _deps_installed "$pkg" || echo "$pkg"
        done
    done
}

# True when apt knows a version of <$1> it could install.
_deps_available() {
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
    [[ -n $candidate && $candidate != "(none)" ]]
}

# True when an apt source of this system includes Ubuntu's universe component.
_deps_universe_enabled() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        if grep -Eq '^[^#]*(^|[[:space:]])universe([[:space:]]|$)' "$f"; then
            return 0
        fi
    done
    return 1
}

# Installs the missing packages of the groups <$@> with apt-get (an update first, once per shell).
# Prints what is missing and what it does. Returns 0 when everything is installed, 1 otherwise, with a
# message saying why (not root, no apt, a package apt does not know).
deps_ensure() {
    local pkg os
    local -a missing unavailable
    for pkg in "$@"; do
        deps_group_packages "$pkg" >/dev/null || return 1
    done
    if ! command -v dpkg-query >/dev/null 2>&1; then
        _deps_log "dpkg-query not found: this is not a Debian or Ubuntu system"
        return 1
    fi
    mapfile -t missing < <(deps_missing "$@")
    if ((${#missing[@]} == 0)); then
        _deps_log "all packages of '$*' are installed"
        return 0
    fi
    _deps_log "missing packages (groups: $*): ${missing[*]}"
    if ((EUID != 0)); then
        _deps_log "installing packages needs root: run as root, or install them first:"
        _deps_log "  apt-get install --no-install-recommends ${missing[*]}"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v apt-cache >/dev/null 2>&1; then
        _deps_log "apt-get not found: install these packages by other means: ${missing[*]}"
        return 1
    fi
    if [[ $DEPS_APT_UPDATED != true ]]; then
        _deps_log "apt-get update"
        if ! DEBIAN_FRONTEND=noninteractive apt-get update; then
            _deps_log "apt-get update failed"
            return 1
        fi
        DEPS_APT_UPDATED=true
    fi
    unavailable=()
    for pkg in "${missing[@]}"; do
        _deps_available "$pkg" || unavailable+=("$pkg")
    done
    if ((${#unavailable[@]} > 0)); then
        _deps_log "apt has no installable version of: ${unavailable[*]}"
        os=$(_deps_os)
        if [[ $os == ubuntu\ * ]] && ! _deps_universe_enabled; then
            _deps_log "on Ubuntu these come from the 'universe' component, which is not enabled here:"
            _deps_log "  add-apt-repository -y universe && apt-get update"
        fi
        return 1
    fi
    _deps_log "apt-get install -y --no-install-recommends ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
        _deps_log "apt-get install failed"
        return 1
    fi
    mapfile -t missing < <(deps_missing "$@")
    if ((${#missing[@]} > 0)); then
        _deps_log "still missing after apt-get install: ${missing[*]}"
        return 1
    fi
    return 0
}
