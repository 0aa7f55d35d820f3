#!/bin/bash
# User-data that turns a fresh Ubuntu or Debian instance into the web host: PostgreSQL reachable only from
# this machine, a database role 'webd' with a generated password, and webd serving on port 8080, all
# through installer/installer.sh --role web. The installer writes LBD_SOURCE_URL (a git repository or a
# .tar.gz) and LBD_LB_NETWORKS (the load balancer's subnets) when it hands this file to `lbctl provision`,
# which fills in webd's certificate and key (issued by the pool's private CA on the load balancer host) for
# the relays' TLS: webd then serves HTTPS only. Both empty (`lbctl provision --web-plain-http`): plain HTTP.
#
# Everything is logged to /var/log/lbd-web-init.log and the console; any failure stops the script with a
# message there.
set -euo pipefail

LBD_SOURCE_URL=''
LBD_LB_NETWORKS=''
# shellcheck disable=SC1083 # lbctl provision replaces the placeholders before the instance runs this
LBD_WEB_TLS_CERT='{{web_tls_cert}}'
# shellcheck disable=SC1083
LBD_WEB_TLS_KEY='{{web_tls_key}}'
LOG=/var/log/lbd-web-init.log
SRC=/usr/local/src/lbd

# cloud-init sends the script's output to the console (and /var/log/cloud-init-output.log).
exec > >(tee -a "$LOG") 2>&1
say() {
    echo "lbd-web-init: $(date -u +%FT%TZ) $*"
}
fail() {
    say "FAILED: $*"
    exit 1
}
trap 'fail "line $LINENO: $BASH_COMMAND (exit $?)"' ERR

((EUID == 0)) || fail "must run as root"
export DEBIAN_FRONTEND=noninteractive

# webd listens on every address. When the instance's own private address (EC2's local-ipv4, which
# cloud-init keeps) is itself a loopback address, the instance shares one host's network with others (the
# boot world of the tests): webd then listens on that address alone.
LISTEN=0.0.0.0:8080
private=$(cloud-init query ds.meta_data.local_ipv4 2>/dev/null || true)
if [[ $private =~ ^127(\.[0-9]{1,3}){3}$ ]]; then
    LISTEN=$private:8080
fi

if [[ -x $SRC/installer/installer.sh ]]; then
    say "using the source already in $SRC"
else
    [[ -n $LBD_SOURCE_URL ]] || fail "no source in $SRC and no source URL was set (LBD_SOURCE_URL)"
    say "fetching the source from $LBD_SOURCE_URL"
    apt-get update
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
fi

# webd believes X-Forwarded-For only from the relays: they reach it from this machine's own subnet (the
# provisioned security group admits only them to the web port); the load balancer's subnets, which the
# installer wrote above, are trusted too, as the relays name the load balancer after the client.
trusted=127.0.0.0/8,::1,local${LBD_LB_NETWORKS:+,$LBD_LB_NETWORKS}
# webd's certificate and key go to the installer through files only root reads; the installer copies them
# to /etc/webd/tls/ (the key never appears in the log).
tls=()
if [[ -n $LBD_WEB_TLS_CERT || -n $LBD_WEB_TLS_KEY ]]; then
    [[ $LBD_WEB_TLS_CERT == *"-----BEGIN CERTIFICATE-----"* && $LBD_WEB_TLS_KEY == *"PRIVATE KEY-----"* ]] ||
        fail "webd's certificate or key in the user data is not PEM"
    tlsdir=$(mktemp -d /run/lbd-web-tls.XXXXXX)
    (umask 077 && printf '%s\n' "$LBD_WEB_TLS_CERT" >"$tlsdir/web.pem" && printf '%s\n' "$LBD_WEB_TLS_KEY" >"$tlsdir/web.key")
    tls=(--tls-cert "$tlsdir/web.pem" --tls-key "$tlsdir/web.key")
fi
say "installing PostgreSQL and webd with installer.sh --role web (trusted relays: $trusted${tls:+; HTTPS})"
"$SRC/installer/installer.sh" --role web --non-interactive --listen "$LISTEN" --trusted-proxies "$trusted" "${tls[@]}"
[[ -z ${tlsdir:-} ]] || rm -rf -- "$tlsdir"
# A renewed certificate arrives in the user data while the web host is stopped (`lbctl provision`): this
# hook installs it at the next boot.
if [[ -n $LBD_WEB_TLS_CERT ]]; then
    install -d -m 0755 /var/lib/cloud/scripts/per-boot
    install -m 0755 "$SRC/scripts/web-tls-boot.sh" /var/lib/cloud/scripts/per-boot/lbd-web-tls.sh
fi

# PostgreSQL listens only on this machine: webd reaches it through /run/postgresql.
changed=false
for dir in /etc/postgresql/*/main; do
    [[ -d $dir ]] || continue
    conf=$dir/conf.d/10-lbd-local-only.conf
    want="listen_addresses = 'localhost'"
    if [[ ! -f $conf || $(cat "$conf") != "$want" ]]; then
        mkdir -p "$dir/conf.d"
        echo "$want" >"$conf"
        say "PostgreSQL ($dir): $want"
        changed=true
    fi
done
if $changed; then
    systemctl restart postgresql.service
    systemctl restart webd.service
fi

systemctl is-active --quiet webd.service || fail "webd.service is not running: journalctl -u webd"
say "done: webd serves $LISTEN${tls:+ over HTTPS}"
