#!/bin/bash
# User-data that turns a fresh Ubuntu or Debian instance into a backend: lbd in relay mode on port 80,
# forwarding every request to the web host. lbd launches each backend with this file after putting its
# [ec2] upstream into the UPSTREAM line, the text of [ec2] upstream_ca (the web host's private CA
# certificate, public) into UPSTREAM_CA and [ec2] upstream_name into UPSTREAM_NAME; the installer writes
# LBD_SOURCE_URL when it copies the file to /etc/lbd/backend-user-data.sh. With a CA the relay speaks TLS to
# the web host and verifies its certificate against that CA and the name (a wrong one fails closed);
# without one, plain HTTP. lbd puts the text of [ec2] relay_tls_cert and relay_tls_key (the relay's own
# certificate and key, from the same private CA) into RELAY_TLS_CERT and RELAY_TLS_KEY: with them the relay
# listens with TLS, which the load balancer verifies; without them, plain HTTP.
#
# With lbd already in the image (/usr/local/sbin/lbd and the lbd-relay unit), it only writes
# /etc/lbd/relay.conf and starts lbd-relay.service. Otherwise it fetches the source from LBD_SOURCE_URL
# (a git repository or a .tar.gz) and runs installer/installer.sh --role backend, which installs the
# packages, builds, and starts the relay. Everything is logged to /var/log/lbd-backend-init.log and the
# console; any failure stops the script with a message there.
set -euo pipefail

# shellcheck disable=SC1083 # lbd replaces the placeholder before the instance runs this
UPSTREAM={{upstream}}
UPSTREAM_CA='{{upstream_ca}}'
UPSTREAM_NAME='{{upstream_name}}'
RELAY_TLS_CERT='{{relay_tls_cert}}'
RELAY_TLS_KEY='{{relay_tls_key}}'
LBD_SOURCE_URL=''
LOG=/var/log/lbd-backend-init.log
SRC=/usr/local/src/lbd

# cloud-init sends the script's output to the console (and /var/log/cloud-init-output.log).
exec > >(tee -a "$LOG") 2>&1
say() {
    echo "lbd-backend-init: $(date -u +%FT%TZ) $*"
}
fail() {
    say "FAILED: $*"
    exit 1
}
trap 'fail "line $LINENO: $BASH_COMMAND (exit $?)"' ERR

# The relay listens on every address, its admin API on the loopback one. When the instance's own private
# address (EC2's local-ipv4, which cloud-init keeps) is itself a loopback address, the instance shares one
# host's network with others (the boot world of the tests): both then listen on that address alone.
LISTEN=0.0.0.0:80
ADMIN=127.0.0.1:9180
private=$(cloud-init query ds.meta_data.local_ipv4 2>/dev/null || true)
if [[ $private =~ ^127(\.[0-9]{1,3}){3}$ ]]; then
    LISTEN=$private:80
    ADMIN=$private:9180
fi

say "starting; upstream $UPSTREAM"
if ! [[ $UPSTREAM =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}:[0-9]{1,5}$ || $UPSTREAM =~ ^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$ ]]; then
    fail "the upstream '$UPSTREAM' is not an ADDRESS:PORT (lbd fills it in from [ec2] upstream)"
fi
if [[ -n $UPSTREAM_CA ]]; then
    [[ $UPSTREAM_CA == *"-----BEGIN CERTIFICATE-----"* ]] || fail "UPSTREAM_CA is not a PEM certificate"
    [[ -z $UPSTREAM_NAME || $UPSTREAM_NAME =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] ||
        fail "the upstream name '$UPSTREAM_NAME' is not a DNS name"
    say "TLS to the web host, verified against the CA in the user data${UPSTREAM_NAME:+ for the name $UPSTREAM_NAME}"
elif [[ -n $UPSTREAM_NAME ]]; then
    fail "UPSTREAM_NAME without UPSTREAM_CA: the name is checked only over TLS"
fi
if [[ -n $RELAY_TLS_CERT || -n $RELAY_TLS_KEY ]]; then
    [[ $RELAY_TLS_CERT == *"-----BEGIN CERTIFICATE-----"* ]] || fail "RELAY_TLS_CERT is not a PEM certificate"
    [[ $RELAY_TLS_KEY == *"-----BEGIN "*"KEY-----"* ]] || fail "RELAY_TLS_KEY is not a PEM private key"
    say "the relay listens with TLS (its certificate and key from the user data)"
fi
((EUID == 0)) || fail "must run as root"

# Writes <text> to <path> as root:lbd 0640, whole (written aside, then renamed).
put_pem() {
    local path=$1 text=$2 tmp
    tmp=$(mktemp "$(dirname "$path")/.pem.XXXXXX")
    chown root:lbd "$tmp"
    chmod 0640 "$tmp"
    printf '%s\n' "$text" >"$tmp"
    mv -f "$tmp" "$path"
}

if [[ -x /usr/local/sbin/lbd && -f /etc/systemd/system/lbd-relay.service ]] && getent passwd lbd >/dev/null; then
    say "lbd is in the image: configuring the relay"
    install -d -m 0750 -o root -g lbd /etc/lbd
    tls=""
    listen=$LISTEN
    if [[ -n $UPSTREAM_CA ]]; then
        put_pem /etc/lbd/upstream-ca.pem "$UPSTREAM_CA"
        tls=$(printf 'backend = on\nbackend_ca = /etc/lbd/upstream-ca.pem\n%s' \
            "${UPSTREAM_NAME:+backend_name = $UPSTREAM_NAME}")
    fi
    if [[ -n $RELAY_TLS_CERT ]]; then
        put_pem /etc/lbd/relay-tls.pem "$RELAY_TLS_CERT"
        put_pem /etc/lbd/relay-tls.key "$RELAY_TLS_KEY"
        listen="$LISTEN tls"
        tls=$(printf 'certificate = /etc/lbd/relay-tls.pem /etc/lbd/relay-tls.key\n%s' "$tls")
    fi
    [[ -z $tls ]] || tls=$(printf '\n[tls]\n%s' "$tls")
    tmp=$(mktemp /etc/lbd/.relay.XXXXXX)
    cat >"$tmp" <<CONF
[lbd]
listen = $listen
admin = $ADMIN

[health]
path = /healthcheck

[pool]
provider = static
backends = $UPSTREAM
$tls
CONF
    chown root:lbd "$tmp"
    chmod 0640 "$tmp"
    mv -f "$tmp" /etc/lbd/relay.conf
    /usr/local/sbin/lbd --config /etc/lbd/relay.conf --check-config
    systemctl daemon-reload
    systemctl enable --quiet lbd-relay.service
    systemctl restart lbd-relay.service
else
    [[ -n $LBD_SOURCE_URL ]] || fail "lbd is not in the image and no source URL was set (LBD_SOURCE_URL)"
    say "fetching the source from $LBD_SOURCE_URL"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    rm -rf "$SRC"
    mkdir -p "$SRC"
    case "$LBD_SOURCE_URL" in
        *.tar.gz | *.tgz)
            apt-get install -y --no-install-recommends ca-certificates curl tar gzip
            curl --fail --silent --show-error --location --retry 5 "$LBD_SOURCE_URL" |
                tar -xz -C "$SRC" --strip-components=1
            ;;
        *)
            apt-get install -y --no-install-recommends ca-certificates git
            git clone --depth 1 "$LBD_SOURCE_URL" "$SRC"
            ;;
    esac
    tls=()
    if [[ -n $UPSTREAM_CA ]]; then
        printf '%s\n' "$UPSTREAM_CA" >"$SRC/upstream-ca.pem"
        tls=(--upstream-ca "$SRC/upstream-ca.pem")
        [[ -z $UPSTREAM_NAME ]] || tls+=(--upstream-name "$UPSTREAM_NAME")
    fi
    if [[ -n $RELAY_TLS_CERT ]]; then
        (
            umask 077
            printf '%s\n' "$RELAY_TLS_CERT" >"$SRC/relay-tls.pem"
            printf '%s\n' "$RELAY_TLS_KEY" >"$SRC/relay-tls.key"
        )
        tls+=(--tls-cert "$SRC/relay-tls.pem" --tls-key "$SRC/relay-tls.key")
    fi
    say "installing with installer.sh --role backend ${tls[*]}"
    "$SRC/installer/installer.sh" --role backend --non-interactive --upstream "$UPSTREAM" --listen "$LISTEN" \
        --admin "$ADMIN" "${tls[@]}"
    rm -f -- "$SRC/relay-tls.key" # the installer copied it to /etc/lbd
fi

systemctl is-active --quiet lbd-relay.service || fail "lbd-relay.service is not running: journalctl -u lbd-relay"
say "done: the relay serves $LISTEN${RELAY_TLS_CERT:+ with TLS} and forwards to $UPSTREAM${UPSTREAM_CA:+ over verified TLS}"
