#!/bin/bash
# Installs lbd, lbctl, webd and webctl on a Debian or Ubuntu machine, in one of three roles, with their
# configuration, service users and systemd units. Safe to run again: it rewrites only what changed and
# keeps generated secrets (the database password) that already exist.
#
# Usage: installer/installer.sh [--role lb|backend|web] [--non-interactive] [--root DIR] [--uninstall]
#                               [--no-packages] [--prefix /usr/local] [--source DIR] [ROLE OPTIONS]
#
#   --role lb        the load balancer (default): lbd.service with /etc/lbd/lbd.conf
#   --role backend   a backend: lbd in relay mode, lbd-relay.service with /etc/lbd/relay.conf
#   --role web       the web host: webd.service with /etc/webd/webd.conf, and a local PostgreSQL database
#   --non-interactive  never prompt: a missing required value is an error (exit 2) naming its flag;
#                    without it, missing values are asked for when standard input is a terminal
#   --root DIR       stage the installation under DIR instead of /: no packages are installed, no users
#                    are created, no database is set up, systemd is not touched, and files keep the
#                    invoking user as owner (the modes are those of a real installation)
#   --uninstall      remove the binaries, the units, the configuration files this installer wrote and the
#                    users lbd and webd; data is kept (/var/lib/webd, the database)
#   --no-packages    do not install Debian packages (scripts/deps.sh groups build, run, web)
#   --prefix DIR     installation prefix (default /usr/local): DIR/sbin/lbd, DIR/bin/lbctl, ...
#   --source DIR     the source tree to build (default: the tree this script is in)
#
# Role lb:
#   --listen ADDR            address clients connect to (default 0.0.0.0:80)
#   --admin ADDR             admin API, loopback only (default 127.0.0.1:9180)
#   --provider ec2|local|static   where backends come from (default ec2)
#   --region R               AWS region (required for ec2 unless --instance-role)
#   --access-key-id ID       AWS access key id (default: the environment's AWS_ACCESS_KEY_ID)
#   --secret-access-key-file PATH   the AWS secret access key, read from PATH: its one line, without the
#                            trailing newline or CR (a file of mode 0600, or /dev/stdin from a pipe)
#   --secret-access-key KEY  the secret itself, on the command line, where other local users can read it in
#                            the process list (ps) while the installer runs (a warning says so)
#                            The secret comes from one of these two flags (not both), else from the
#                            environment's AWS_SECRET_ACCESS_KEY, else from a prompt that does not echo it.
#                            Prefer the file or the environment; with sudo, keep the environment with
#                            sudo --preserve-env=AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY installer/installer.sh
#                            The key id and the secret are written to /etc/lbd/credentials (0600 lbd).
#   --instance-role          use the instance's role through the metadata service instead of keys
#   --endpoint URL           EC2 endpoint override ([ec2] endpoint)
#   --desired N              backends to keep (default 3)
#   --subnet ID --security-groups sg-a,sg-b --image AMI --instance-type T --key-name K
#   --networks CIDR[,CIDR]   backend address allowlist ([pool] networks)
#   --upstream ADDR          the web host's ADDRESS:PORT; given, no web host is provisioned
#   --tag KEY=VALUE          tag of the pool's instances (default lbd:pool=main)
#   --lease-database CONNINFO  two or more LB hosts on one pool: the libpq connection string of the
#                            lease's database (a database and role of its own on the web host's
#                            PostgreSQL), written to /etc/lbd/lease.conninfo (0600 lbd); only the leader acts
#   --lease-name NAME        this host's name in the lease (default: its host name)
#   --elastic-ip ALLOC       the pool's Elastic IP (eipalloc-...), moved to the leader's instance; needs
#                            --lease-database; this host's instance id comes from the instance metadata
#                            (IMDSv2) unless --instance-id gives it
#   --instance-id ID         this host's instance (i-...), for --elastic-ip
#   --peer ADDRESS[:PORT]    another LB host of the pool (repeatable; IPv4, or [IPv6]:PORT; port 9181 by
#                            default): this host answers GET /lease on 0.0.0.0:9181 ([lease] listen) and
#                            asks each peer for its own ([lease] peers), for /status and `lbctl status`;
#                            needs --lease-database
#   --provision | --no-provision   create the security groups and the web host with `lbctl provision`
#                            (default: provision when the provider is ec2 and --upstream is not given;
#                            it needs --subnet; the image it reports, baked or given, is the backends')
#                            The relays then speak TLS to webd, verified against a private CA made here
#                            (/etc/lbd/web-tls/ca.pem, its key ca.key 0600 root, never sent anywhere);
#                            webd's certificate lasts 825 days, and a run of the installer (or lbctl
#                            provision) within 30 days of its end renews it from the same CA
#   --web-plain-http         with --provision: plain HTTP between the relays and webd (not recommended)
#                            With --provision the relays also listen with TLS: a certificate for
#                            relay.lbd.internal from the same CA (/etc/lbd/web-tls/relay.pem, its key
#                            relay.key 0600 lbd) goes into each backend's user data, and lbd's proxying
#                            and health checks verify it ([tls] backend = on); renewed like webd's
#   --relay-plain-http       with --provision: plain HTTP between lbd and the relays (not recommended)
#   HTTPS (either pair; then --listen redirects to HTTPS, and the ACME challenge is served there):
#   --tls-cert PATH --tls-key PATH   a certificate (chain after it) and its key that you already have:
#                            copied to /etc/lbd/tls/ (0640 root:lbd); run the installer again, or copy
#                            new files over them and `systemctl reload lbd`, when they are renewed
#   --domain NAME --acme-email EMAIL  a certificate from Let's Encrypt with Debian's certbot in webroot
#                            mode: lbd serves the challenge from /var/lib/lbd/acme; certbot's deploy hook
#                            (/etc/letsencrypt/renewal-hooks/deploy/lbd.sh) copies each renewal to
#                            /etc/lbd/tls/ and reloads lbd; certbot.timer renews
#   --tls-listen ADDR        the HTTPS address (default 0.0.0.0:443)
# Role backend:
#   --upstream ADDR          the web host's ADDRESS:PORT (required)
#   --listen ADDR            (default 0.0.0.0:80)
#   --admin ADDR             the relay's admin API, loopback only (default 127.0.0.1:9180)
#   --upstream-ca PATH       speak TLS to the web host, trusting only this CA certificate (copied to
#                            /etc/lbd/upstream-ca.pem): a wrong certificate fails closed
#   --upstream-name NAME     the name the web host's certificate must carry (default: its IP address)
#   --tls-cert PATH --tls-key PATH   the relay listens with TLS with this certificate and key (copied to
#                            /etc/lbd/relay-tls.pem and .key, 0640 root:lbd), for an LB with [tls] backend = on
# Role web:
#   --listen ADDR            (default 0.0.0.0:8080)
#   --database CONNINFO      libpq connection string; default: a local PostgreSQL role and database 'webd'
#                            created here, with a generated password kept in /etc/webd/pgpass (0600 webd)
#   --tls-cert PATH --tls-key PATH   webd serves HTTPS with this certificate (chain after it) and key, copied
#                            to /etc/webd/tls/ (0640 root:webd); `systemctl reload webd` after renewing them
#   --tls-private-ca NAME    webd serves HTTPS with a certificate for the DNS name NAME signed by a private
#                            CA made here (/etc/webd/tls/ca.pem, its key ca.key 0600 root, kept across runs;
#                            the certificate is made again when NAME changes or it has under 30 days left).
#                            Install each relay with --upstream-ca (a copy of ca.pem) --upstream-name NAME
#   --trusted-proxies CIDR[,CIDR]  the relays (the backends' networks): webd takes the client's address from
#                            X-Forwarded-For only on connections from these (default 127.0.0.0/8,::1); the
#                            word 'local' in the list stands for the subnets of this machine's addresses
#
# Environment: LBD_BUILD_DIR, the meson build directory (default SOURCE/build-install; an existing,
# configured one is reused); LBD_SOURCE_URL, where the backends' and the web host's user-data fetch the
# source when their image has no lbd (a git repository or a .tar.gz URL, written into the user-data);
# LBD_LBCTL, the lbctl that runs `lbctl provision` (default: the one this installation installs);
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, role lb's credentials when no flag gives them.
#
# Exit status: 0 done, 1 failure, 2 bad usage or a missing required value.
set -euo pipefail

PROG=installer.sh
INSTALLER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MARKER="# Written by installer.sh: re-run the installer to change it (it rewrites this file)."
UNIT_MARKER="# Installed by installer.sh from systemd/ in the lbd source tree."

log() {
    echo "$PROG: $*"
}

warn() {
    echo "$PROG: warning: $*" >&2
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

usage_error() {
    echo "$PROG: $*" >&2
    echo "$PROG: see --help" >&2
    exit 2
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# ---------------------------------------------------------------------------------------------------------
# Options

role=lb
non_interactive=false
root=""
uninstall=false
packages=true
prefix=/usr/local
source_dir=""
listen=""
admin=127.0.0.1:9180
provider=ec2
region=""
access_key_id=""
secret_access_key=""
secret_access_key_file=""
instance_role=false
endpoint=""
desired=3
subnet=""
security_groups=""
image=""
instance_type=""
key_name=""
networks=""
upstream=""
tag=lbd:pool=main
provision=""
web_plain_http=false
relay_plain_http=false
relay_cert=""
relay_key=""
relay_name=""
web_ca=""
web_name=""
database=""
trusted_proxies=127.0.0.0/8,::1
tls_cert=""
tls_key=""
tls_private_ca=""
upstream_ca=""
upstream_name=""
tls_listen=0.0.0.0:443
domain=""
acme_email=""
lease_database=""
lease_name=""
elastic_ip=""
instance_id=""
peers=()
PEER_PORT=9181 # [lease] listen's port, and a peer's when --peer gives none

# Names of the options given, for checks that depend on the role.
declare -A given=()

need_value() {
    (($2 >= 2)) || usage_error "$1 needs a value"
}

parse_options() {
    local opt value
    while (($# > 0)); do
        opt=$1
        value=""
        if [[ $opt == --*=* ]]; then
            value=${opt#*=}
            opt=${opt%%=*}
            set -- "$opt" "$value" "${@:2}"
        fi
        case "$opt" in
            -h | --help)
                usage
                exit 0
                ;;
            --non-interactive) non_interactive=true ;;
            --uninstall) uninstall=true ;;
            --no-packages) packages=false ;;
            --instance-role) instance_role=true ;;
            --provision) provision=true ;;
            --web-plain-http) web_plain_http=true ;;
            --relay-plain-http) relay_plain_http=true ;;
            --no-provision) provision=false ;;
            --role | --root | --prefix | --source | --listen | --admin | --provider | --region | \
                --access-key-id | --secret-access-key | --secret-access-key-file | --endpoint | --desired | \
                --subnet | --security-groups | --image | --instance-type | --key-name | --networks | \
                --upstream | --tag | --database | --trusted-proxies | --tls-cert | --tls-key | --tls-listen | \
                --domain | --acme-email | --upstream-ca | --upstream-name | --tls-private-ca | --lease-database | \
                --lease-name | --elastic-ip | --instance-id | --peer)
                need_value "$opt" $#
                value=$2
                shift
                case "$opt" in
                    --role) role=$value ;;
                    --root) root=$value ;;
                    --prefix) prefix=$value ;;
                    --source) source_dir=$value ;;
                    --listen) listen=$value ;;
                    --admin) admin=$value ;;
                    --provider) provider=$value ;;
                    --region) region=$value ;;
                    --access-key-id) access_key_id=$value ;;
                    --secret-access-key) secret_access_key=$value ;;
                    --secret-access-key-file) secret_access_key_file=$value ;;
                    --endpoint) endpoint=$value ;;
                    --desired) desired=$value ;;
                    --subnet) subnet=$value ;;
                    --security-groups) security_groups=$value ;;
                    --image) image=$value ;;
                    --instance-type) instance_type=$value ;;
                    --key-name) key_name=$value ;;
                    --networks) networks=$value ;;
                    --upstream) upstream=$value ;;
                    --tag) tag=$value ;;
                    --database) database=$value ;;
                    --trusted-proxies) trusted_proxies=$value ;;
                    --tls-cert) tls_cert=$value ;;
                    --tls-key) tls_key=$value ;;
                    --tls-listen) tls_listen=$value ;;
                    --domain) domain=$value ;;
                    --acme-email) acme_email=$value ;;
                    --upstream-ca) upstream_ca=$value ;;
                    --upstream-name) upstream_name=$value ;;
                    --tls-private-ca) tls_private_ca=$value ;;
                    --lease-database) lease_database=$value ;;
                    --lease-name) lease_name=$value ;;
                    --elastic-ip) elastic_ip=$value ;;
                    --instance-id) instance_id=$value ;;
                    --peer) peers+=("$value") ;;
                esac
                ;;
            *) usage_error "unknown option '$opt'" ;;
        esac
        given[$opt]=1
        shift
    done
}

# ---------------------------------------------------------------------------------------------------------
# Validation: every value is checked before it reaches a file.

valid_ipv4() {
    local a b c d x
    [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
    a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]} c=${BASH_REMATCH[3]} d=${BASH_REMATCH[4]}
    for x in "$a" "$b" "$c" "$d"; do
        [[ $x =~ ^(0|[1-9][0-9]*)$ ]] && ((10#$x <= 255)) || return 1
    done
}

valid_ipv6() {
    [[ $1 =~ ^[0-9A-Fa-f:.]+$ && $1 == *:* && ${#1} -le 45 ]]
}

valid_port() {
    [[ $1 =~ ^[1-9][0-9]{0,4}$ ]] && ((10#$1 <= 65535))
}

# ADDRESS:PORT with a numeric IPv4 address or a bracketed IPv6 one ("[::1]:80").
valid_addr() {
    local host port
    if [[ $1 =~ ^\[([^]]+)\]:([0-9]+)$ ]]; then
        host=${BASH_REMATCH[1]}
        port=${BASH_REMATCH[2]}
        valid_ipv6 "$host" && valid_port "$port"
        return
    fi
    [[ $1 =~ ^([0-9.]+):([0-9]+)$ ]] || return 1
    host=${BASH_REMATCH[1]}
    port=${BASH_REMATCH[2]}
    valid_ipv4 "$host" && valid_port "$port"
}

valid_loopback_addr() {
    valid_addr "$1" && [[ $1 == 127.* || $1 == "[::1]:"* ]]
}

valid_cidr() {
    local net len
    [[ $1 =~ ^([^/]+)/([0-9]{1,3})$ ]] || return 1
    net=${BASH_REMATCH[1]}
    len=${BASH_REMATCH[2]}
    if valid_ipv4 "$net"; then
        ((10#$len <= 32))
    else
        valid_ipv6 "$net" && ((10#$len <= 128))
    fi
}

valid_list() {
    local check=$1 item
    local -a items
    [[ -n $2 && $2 != *,,* && $2 != ,* && $2 != *, ]] || return 1
    IFS=, read -ra items <<<"$2"
    for item in "${items[@]}"; do
        "$check" "$item" || return 1
    done
}

valid_cidr_list() { valid_list valid_cidr "$1"; }
valid_net() { valid_cidr "$1" || valid_ipv4 "$1" || valid_ipv6 "$1"; }
valid_net_list() { valid_list valid_net "$1"; }
valid_sg_list() { valid_list valid_sg "$1"; }
valid_region() { [[ $1 =~ ^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$ ]]; }
valid_access_key_id() { [[ $1 =~ ^[A-Z0-9]{16,128}$ ]]; }
valid_secret_key() { [[ $1 =~ ^[A-Za-z0-9/+=]{16,128}$ ]]; }
valid_endpoint() { [[ $1 =~ ^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$ || $1 =~ ^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?/?$ ]]; }
valid_desired() { [[ $1 =~ ^(0|[1-9][0-9]{0,3})$ ]] && ((10#$1 <= 1000)); }
valid_subnet() { [[ $1 =~ ^subnet-[0-9a-f]{8,17}$ ]]; }
valid_sg() { [[ $1 =~ ^sg-[0-9a-f]{8,17}$ ]]; }
valid_image() { [[ $1 =~ ^ami-[0-9a-f]{8,17}$ ]]; }
valid_instance_id() { [[ $1 =~ ^i-[0-9a-f]{8,17}$ ]]; }
valid_instance_type() { [[ $1 =~ ^[a-z][a-z0-9-]*\.[a-z0-9-]+$ && ${#1} -le 64 ]]; }
valid_key_name() { [[ $1 =~ ^[A-Za-z0-9._@+-]{1,255}$ ]]; }
valid_tag() { [[ $1 =~ ^[A-Za-z0-9:._/@+-]{1,128}=[A-Za-z0-9:._/@+-]{0,256}$ && $1 != aws:* ]]; }
valid_domain() { [[ ${#1} -le 253 && $1 =~ ^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$ ]]; }
valid_email() { [[ ${#1} -le 254 && $1 =~ ^[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+\.)+[A-Za-z]{2,63}$ ]]; }
valid_pem_path() { [[ $1 == /* && -f $1 && -r $1 && $1 != *[[:space:]]* ]]; }
valid_lease_name() { [[ $1 =~ ^[A-Za-z0-9._-]{1,63}$ ]]; }
valid_allocation_id() { [[ $1 =~ ^eipalloc-[0-9a-f]{8,17}$ ]]; }
valid_url() { [[ $1 =~ ^(https?|git)://[A-Za-z0-9._~:/?@+=%,-]+$ ]]; }

# A libpq connection string as one INI value: one line, and nothing an INI reader would take for a
# comment (";" or "#" after a blank).
valid_conninfo() {
    [[ -n $1 && $1 != *$'\n'* && $1 != *$'\r'* && ! $1 =~ [[:space:]][\;#] && ! $1 =~ ^[\;#] ]]
}

check() {
    local flag=$1 checker=$2 value=$3 what=$4
    "$checker" "$value" || usage_error "$flag: '$value' is not $what"
}

# The same, for secrets: the value is never printed.
check_secret() {
    local flag=$1 checker=$2 value=$3 what=$4
    "$checker" "$value" || usage_error "$flag: the value given is not $what"
}

# Asks for <flag>'s value when standard input is a terminal and prompts are allowed, else exits 2
# naming the flag, or <what> when given (the flag and its alternatives). Sets the variable <var>.
# <secret>: read without echo.
ask() {
    local flag=$1 var=$2 prompt=$3 secret=${4:-false} what=${5:-$1} answer=""
    if $non_interactive || [[ ! -t 0 ]]; then
        if [[ $role == lb ]]; then
            echo "$PROG: missing $what (required for role lb with provider $provider)" >&2
        else
            echo "$PROG: missing $what (required for role $role)" >&2
        fi
        exit 2
    fi
    while [[ -z $answer ]]; do
        if $secret; then
            read -r -s -p "$prompt: " answer
            echo >&2
        else
            read -r -p "$prompt: " answer
        fi
    done
    printf -v "$var" '%s' "$answer"
}

only_for() {
    local wanted=$1 flag
    shift
    for flag in "$@"; do
        if [[ -n ${given[$flag]:-} ]]; then
            usage_error "$flag does not apply to role $role (only to $wanted)"
        fi
    done
}

validate() {
    case "$role" in
        lb | backend | web) ;;
        *) usage_error "--role: '$role' is not lb, backend or web" ;;
    esac
    [[ $prefix == /* && $prefix != *[[:space:]]* && $prefix != *..* ]] ||
        usage_error "--prefix: '$prefix' is not an absolute path"
    prefix=${prefix%/}
    [[ -n $prefix ]] || prefix=/
    if [[ -n $root ]]; then
        [[ $root != *[[:space:]]* ]] || usage_error "--root: '$root' has blanks"
        mkdir -p -- "$root"
        root=$(cd -- "$root" && pwd)
        [[ $root != / ]] || root=""
    fi

    $uninstall && return 0

    local lb_only=(--provider --region --access-key-id --secret-access-key
        --secret-access-key-file --instance-role --endpoint --desired --subnet --security-groups --image
        --instance-type --key-name --networks --tag --provision --no-provision --tls-cert --tls-key
        --tls-listen --domain --acme-email --lease-database --lease-name --elastic-ip --instance-id --peer
        --web-plain-http --relay-plain-http)
    case "$role" in
        lb)
            only_for web --database --trusted-proxies --tls-private-ca
            only_for backend --upstream-ca --upstream-name
            [[ -n $listen ]] || listen=0.0.0.0:80
            check --listen valid_addr "$listen" "an ADDRESS:PORT such as 0.0.0.0:80"
            check --admin valid_loopback_addr "$admin" "a loopback ADDRESS:PORT such as 127.0.0.1:9180"
            validate_tls
            case "$provider" in
                ec2 | local | static) ;;
                *) usage_error "--provider: '$provider' is not ec2, local or static" ;;
            esac
            check --desired valid_desired "$desired" "a number from 0 to 1000"
            validate_lease
            [[ -z $networks ]] || check --networks valid_cidr_list "$networks" "a CIDR list such as 10.0.0.0/16,10.1.0.0/16"
            [[ -z $upstream ]] || check --upstream valid_addr "$upstream" "an ADDRESS:PORT such as 10.0.1.20:8080"
            if [[ $provider == ec2 ]]; then
                validate_ec2
            else
                local flag
                for flag in --region --access-key-id --secret-access-key --secret-access-key-file \
                    --instance-role --endpoint --subnet --security-groups --image --instance-type \
                    --key-name --tag --provision --web-plain-http --relay-plain-http; do
                    [[ -z ${given[$flag]:-} ]] || usage_error "$flag applies only to --provider ec2"
                done
                provision=false
                [[ -n $upstream ]] ||
                    ask --upstream upstream "Address of the web host (ADDRESS:PORT, e.g. 127.0.0.1:8080)"
                check --upstream valid_addr "$upstream" "an ADDRESS:PORT such as 127.0.0.1:8080"
            fi
            ;;
        backend)
            local flag backend_lb_only=()
            for flag in "${lb_only[@]}"; do
                [[ $flag == --tls-cert || $flag == --tls-key ]] || backend_lb_only+=("$flag")
            done
            only_for lb "${backend_lb_only[@]}"
            only_for web --database --trusted-proxies --tls-private-ca
            [[ -n $listen ]] || listen=0.0.0.0:80
            check --listen valid_addr "$listen" "an ADDRESS:PORT such as 0.0.0.0:80"
            check --admin valid_loopback_addr "$admin" "a loopback ADDRESS:PORT such as 127.0.0.1:9180"
            [[ -n $upstream ]] || ask --upstream upstream "Address of the web host (ADDRESS:PORT, e.g. 10.0.1.20:8080)"
            check --upstream valid_addr "$upstream" "an ADDRESS:PORT such as 10.0.1.20:8080"
            if [[ -n $upstream_ca ]]; then
                check --upstream-ca valid_pem_path "$upstream_ca" "the absolute path of a readable PEM file"
            fi
            if [[ -n $upstream_name ]]; then
                [[ -n $upstream_ca ]] || usage_error "--upstream-name needs --upstream-ca"
                check --upstream-name valid_domain "$upstream_name" "a DNS name such as web.internal.example"
            fi
            if [[ -n $tls_cert || -n $tls_key ]]; then
                [[ -n $tls_cert && -n $tls_key ]] || usage_error "--tls-cert and --tls-key go together"
                check --tls-cert valid_pem_path "$tls_cert" "the absolute path of a readable PEM file"
                check --tls-key valid_pem_path "$tls_key" "the absolute path of a readable PEM file"
            fi
            ;;
        web)
            local flag web_lb_only=()
            for flag in "${lb_only[@]}"; do
                [[ $flag == --tls-cert || $flag == --tls-key ]] || web_lb_only+=("$flag")
            done
            only_for lb "${web_lb_only[@]}" --upstream
            only_for "lb and backend" --admin
            if [[ -n $tls_cert || -n $tls_key ]]; then
                [[ -n $tls_cert && -n $tls_key ]] || usage_error "--tls-cert and --tls-key go together"
                check --tls-cert valid_pem_path "$tls_cert" "the absolute path of a readable PEM file"
                check --tls-key valid_pem_path "$tls_key" "the absolute path of a readable PEM file"
                [[ -z $tls_private_ca ]] || usage_error "--tls-cert (your own) and --tls-private-ca are two ways: pick one"
            fi
            if [[ -n $tls_private_ca ]]; then
                check --tls-private-ca valid_domain "$tls_private_ca" "a DNS name such as web.internal"
            fi
            only_for backend --upstream-ca --upstream-name
            [[ -n $listen ]] || listen=0.0.0.0:8080
            check --listen valid_addr "$listen" "an ADDRESS:PORT such as 0.0.0.0:8080"
            trusted_proxies=$(expand_local "$trusted_proxies")
            check --trusted-proxies valid_net_list "$trusted_proxies" "a list of networks such as 10.0.1.0/24,127.0.0.0/8,::1"
            if [[ -n ${given[--database]:-} ]]; then
                valid_conninfo "$database" ||
                    usage_error "--database: the connection string must be one line with no ' ;' or ' #'"
            fi
            ;;
    esac
}

# The HTTPS flags of role lb: a certificate the user has, or one certbot gets; not both.
validate_tls() {
    if [[ -n $tls_cert || -n $tls_key ]]; then
        [[ -n $tls_cert && -n $tls_key ]] || usage_error "--tls-cert and --tls-key go together"
        check --tls-cert valid_pem_path "$tls_cert" "the absolute path of a readable PEM file"
        check --tls-key valid_pem_path "$tls_key" "the absolute path of a readable PEM file"
    fi
    if [[ -n $domain || -n $acme_email ]]; then
        [[ -n $domain && -n $acme_email ]] || usage_error "--domain and --acme-email go together"
        [[ -z $tls_cert ]] || usage_error "--domain (certbot) and --tls-cert (your own) are two ways: pick one"
        check --domain valid_domain "$domain" "a DNS name such as www.example.com"
        check --acme-email valid_email "$acme_email" "an e-mail address"
    fi
    check --tls-listen valid_addr "$tls_listen" "an ADDRESS:PORT such as 0.0.0.0:443"
    [[ $tls_listen != "$listen" ]] || usage_error "--tls-listen: the same address as --listen"
}

# Reads the secret access key from <path>: its one non-empty line, without the trailing newline or CR.
# The secret is read by the shell itself, so it is never on a command line.
read_secret_file() {
    local path=$1 line
    local -a lines=()
    [[ -n $path ]] || usage_error "--secret-access-key-file needs a path"
    [[ -e $path ]] || usage_error "--secret-access-key-file: $path does not exist"
    [[ ! -d $path ]] || usage_error "--secret-access-key-file: $path is a directory"
    [[ -r $path ]] || usage_error "--secret-access-key-file: $path is not readable by $(id -un)"
    if ! {
        while IFS= read -r line || [[ -n $line ]]; do
            line=${line%$'\r'}
            [[ $line == *[![:space:]]* ]] || continue
            lines+=("$line")
            ((${#lines[@]} < 2)) || break
        done <"$path"
    } 2>/dev/null; then
        usage_error "--secret-access-key-file: cannot read $path"
    fi
    ((${#lines[@]} > 0)) || usage_error "--secret-access-key-file: $path is empty"
    ((${#lines[@]} == 1)) ||
        usage_error "--secret-access-key-file: $path has more than one line (it must hold the secret access key alone)"
    secret_access_key=${lines[0]}
}

# Sets access_key_id and secret_access_key from their sources, in this order: --secret-access-key-file
# or --secret-access-key (one of them), then the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# as the AWS CLI reads them); what is still missing is asked for later. Sets key_id_source and
# secret_source, the names the checks report.
credential_sources() {
    key_id_source=--access-key-id
    secret_source=--secret-access-key
    if [[ -n ${given[--secret-access-key-file]:-} && -n ${given[--secret-access-key]:-} ]]; then
        usage_error "give the secret access key once: --secret-access-key-file or --secret-access-key, not both"
    fi
    if $instance_role; then
        [[ -z $access_key_id && -z $secret_access_key && -z ${given[--secret-access-key-file]:-} ]] ||
            usage_error "--instance-role and --access-key-id/--secret-access-key/--secret-access-key-file exclude each other"
        return 0
    fi
    if [[ -n ${given[--secret-access-key-file]:-} ]]; then
        read_secret_file "$secret_access_key_file"
        secret_source="--secret-access-key-file $secret_access_key_file"
    elif [[ -n $secret_access_key ]]; then
        warn "--secret-access-key puts the secret on the command line, where other local users can read it" \
            "in the process list (ps) while the installer runs: use --secret-access-key-file PATH or the" \
            "environment variable AWS_SECRET_ACCESS_KEY instead"
    elif [[ -n ${AWS_SECRET_ACCESS_KEY:-} ]]; then
        secret_access_key=$AWS_SECRET_ACCESS_KEY
        secret_source=AWS_SECRET_ACCESS_KEY
    fi
    if [[ -z $access_key_id && -n ${AWS_ACCESS_KEY_ID:-} ]]; then
        access_key_id=$AWS_ACCESS_KEY_ID
        key_id_source=AWS_ACCESS_KEY_ID
    fi
    if [[ -n ${AWS_SESSION_TOKEN:-} && ($secret_source == AWS_* || $key_id_source == AWS_*) ]]; then
        warn "AWS_SESSION_TOKEN is set: temporary credentials expire, and /etc/lbd/credentials holds no" \
            "session token; lbd needs an IAM user's access key (or --instance-role)"
    fi
}

# The lease ([lease]): several LB hosts on one pool. The Elastic IP follows the leader's instance.
validate_lease() {
    if [[ -n $lease_database ]]; then
        [[ $provider != static ]] || usage_error "--lease-database: the static provider acts on nothing to lead"
        check_secret --lease-database valid_conninfo "$lease_database" "a one-line libpq connection string"
    fi
    [[ -z $lease_name ]] || check --lease-name valid_lease_name "$lease_name" "1 to 63 letters, digits, '.', '_' or '-'"
    [[ -z $instance_id ]] || check --instance-id valid_instance_id "$instance_id" "an instance id such as i-0123456789abcdef0"
    if [[ -n $elastic_ip ]]; then
        check --elastic-ip valid_allocation_id "$elastic_ip" "an allocation id such as eipalloc-0123456789abcdef0"
        [[ -n $lease_database ]] || usage_error "--elastic-ip needs --lease-database: the address follows the leader"
        [[ $provider == ec2 ]] || usage_error "--elastic-ip needs --provider ec2"
    elif [[ -n $lease_name && -z $lease_database ]] || [[ -n $instance_id && -z $elastic_ip ]]; then
        usage_error "--lease-name needs --lease-database, --instance-id needs --elastic-ip"
    fi
    local i
    ((${#peers[@]} <= 8)) || usage_error "--peer: at most 8 other LB hosts"
    for i in "${!peers[@]}"; do
        if valid_ipv4 "${peers[i]}"; then
            peers[i]="${peers[i]}:$PEER_PORT"
        fi
        check --peer valid_addr "${peers[i]}" \
            "another LB host's numeric address, such as 192.0.2.7, 192.0.2.7:9181 or [2001:db8::7]:9181"
    done
    ((${#peers[@]} == 0)) || [[ -n $lease_database ]] ||
        usage_error "--peer needs --lease-database: the hosts share the lease"
    ((${#peers[@]} == 0)) || [[ ${admin##*:} != "$PEER_PORT" && ${listen##*:} != "$PEER_PORT" ]] ||
        usage_error "--peer: this host's lease listener takes port $PEER_PORT, which --admin or --listen uses"
}

# This instance's id from the instance metadata service (IMDSv2: a session token first).
imds_instance_id() {
    local token id
    token=$(curl -sf -m 3 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
        http://169.254.169.254/latest/api/token) || return 1
    id=$(curl -sf -m 3 -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id) ||
        return 1
    valid_instance_id "$id" || return 1
    echo "$id"
}

write_lease() {
    [[ -n $lease_database ]] || return 0
    put_content /etc/lbd/lease.conninfo 0600 lbd lbd <<EOF
$MARKER
$lease_database
EOF
    if [[ -n $elastic_ip && -z $instance_id ]]; then
        instance_id=$(imds_instance_id) ||
            die "--elastic-ip: this host's instance id is not in the instance metadata: give --instance-id"
    fi
}

lease_config() {
    [[ -n $lease_database ]] || return 0
    echo
    echo "[lease]"
    echo "conninfo_file = /etc/lbd/lease.conninfo"
    [[ -z $lease_name ]] || echo "name = $lease_name"
    if [[ -n $elastic_ip ]]; then
        echo "elastic_ip = $elastic_ip"
        echo "instance_id = $instance_id"
    fi
    if ((${#peers[@]} > 0)); then
        echo "listen = 0.0.0.0:$PEER_PORT"
        local IFS=,
        echo "peers = ${peers[*]}"
    fi
}

validate_ec2() {
    credential_sources
    if [[ -z $provision ]]; then
        if [[ -n $upstream ]]; then provision=false; else provision=true; fi
    fi
    if [[ $provision == true && -n $upstream ]]; then
        usage_error "--provision creates the web host: do not give --upstream with it"
    fi
    if [[ $provision == false && -z $upstream ]]; then
        ask --upstream upstream "Address of the web host the backends relay to (ADDRESS:PORT)"
        check --upstream valid_addr "$upstream" "an ADDRESS:PORT such as 10.0.1.20:8080"
    fi

    if ! $instance_role; then
        [[ -n $region ]] || ask --region region "AWS region (e.g. us-east-1)"
        [[ -n $access_key_id ]] ||
            ask --access-key-id access_key_id "AWS access key ID" false "--access-key-id or AWS_ACCESS_KEY_ID"
        [[ -n $secret_access_key ]] ||
            ask --secret-access-key secret_access_key "AWS secret access key" true \
                "--secret-access-key-file PATH or AWS_SECRET_ACCESS_KEY"
        check "$key_id_source" valid_access_key_id "$access_key_id" "an AWS access key id (16 to 128 capitals and digits)"
        check_secret "$secret_source" valid_secret_key "$secret_access_key" "an AWS secret access key"
    fi
    [[ -z $region ]] || check --region valid_region "$region" "an AWS region such as us-east-1"
    [[ -z $endpoint ]] || check --endpoint valid_endpoint "$endpoint" "an http(s)://HOST[:PORT] URL"
    [[ -z $subnet ]] || check --subnet valid_subnet "$subnet" "a subnet id (subnet-…)"
    [[ -z $security_groups ]] || check --security-groups valid_sg_list "$security_groups" "a list of security group ids (sg-…)"
    [[ -z $image ]] || check --image valid_image "$image" "an AMI id (ami-…)"
    [[ -z $instance_type ]] || check --instance-type valid_instance_type "$instance_type" "an instance type such as t3.micro"
    [[ -z $key_name ]] || check --key-name valid_key_name "$key_name" "a key pair name"
    check --tag valid_tag "$tag" "KEY=VALUE (letters, digits and :._/@+-; not aws:)"
    if [[ $provision == true && -z $subnet ]]; then
        ask --subnet subnet "Subnet for the backends and the web host (subnet-…)"
        check --subnet valid_subnet "$subnet" "a subnet id (subnet-…)"
    fi
    if [[ $provision == false && -z $image ]]; then
        ask --image image "AMI id the backends boot from (ami-…)"
        check --image valid_image "$image" "an AMI id (ami-…)"
    fi
}

# ---------------------------------------------------------------------------------------------------------
# Files

# The path of <path> in the installation (under --root when staging).
dest() {
    echo "$root$1"
}

# True for an installation into / (not staged with --root).
real_install() {
    [[ -z $root ]]
}

# Installs the content of file <src> at <path> with <mode>, <owner> and <group> (owners are set only on a
# real installation), writing it only when the content differs. Prints "changed" on stdout when it wrote.
put_file() {
    local src=$1 path=$2 mode=$3 owner=$4 group=$5 target
    target=$(dest "$path")
    mkdir -p -- "$(dirname -- "$target")"
    if [[ -f $target ]] && cmp -s -- "$src" "$target"; then
        chmod "$mode" -- "$target"
        real_install && chown "$owner:$group" -- "$target"
        return 0
    fi
    local tmp
    tmp=$(mktemp "$(dirname -- "$target")/.installer.XXXXXX")
    chmod "$mode" -- "$tmp"
    real_install && chown "$owner:$group" -- "$tmp"
    cat -- "$src" >"$tmp"
    mv -f -- "$tmp" "$target"
    changed=true
    log "wrote $path (mode $mode${root:+, staged})"
}

# Like put_file, with the content on standard input.
put_content() {
    local tmp
    tmp=$(mktemp)
    chmod 600 -- "$tmp"
    cat >"$tmp"
    put_file "$tmp" "$@"
    rm -f -- "$tmp"
}

make_dir() {
    local path=$1 mode=$2 owner=$3 group=$4 target
    target=$(dest "$path")
    mkdir -p -- "$target"
    chmod "$mode" -- "$target"
    real_install && chown "$owner:$group" -- "$target"
    return 0
}

# Removes <path> if it exists and, when <marker> is given, only if the file carries it.
remove_file() {
    local path=$1 marker=${2:-} target
    target=$(dest "$path")
    [[ -e $target || -L $target ]] || return 0
    if [[ -n $marker ]] && ! grep -qxF -- "$marker" "$target"; then
        warn "$path was not written by this installer: kept"
        return 0
    fi
    rm -f -- "$target"
    log "removed $path"
}

remove_dir_if_empty() {
    local target
    target=$(dest "$1")
    if [[ -d $target ]] && rmdir -- "$target" 2>/dev/null; then
        log "removed $1"
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------------------
# Steps

systemd_running() {
    real_install && [[ -d /run/systemd/system ]]
}

install_packages() {
    local -a groups=(run)
    if ! real_install; then
        log "--root: not installing packages"
        return 0
    fi
    if ! $packages; then
        log "--no-packages: not installing packages"
        return 0
    fi
    [[ -f $source_dir/scripts/deps.sh ]] || die "$source_dir/scripts/deps.sh not found (see --source)"
    # shellcheck source=SCRIPTDIR/../scripts/deps.sh
    source "$source_dir/scripts/deps.sh"
    if ! have_build; then
        groups+=(build)
    fi
    if [[ $role == web && -z ${given[--database]:-} ]]; then
        groups+=(web)
    fi
    log "checking packages: ${groups[*]}"
    deps_ensure "${groups[@]}" || die "could not install the packages this installation needs"
}

build_dir() {
    echo "${LBD_BUILD_DIR:-$source_dir/build-install}"
}

# True when the build directory is configured (it is then reused as it is).
have_build() {
    [[ -f $(build_dir)/build.ninja && -f $(build_dir)/meson-private/coredata.dat ]]
}

build_and_install() {
    local bdir current
    bdir=$(build_dir)
    command -v meson >/dev/null || die "meson not found: install the 'build' packages (see scripts/deps.sh)"
    if have_build; then
        log "building in $bdir (existing build directory)"
        current=$(meson introspect --buildoptions "$bdir" |
            python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
        if [[ $current != "$prefix" ]]; then
            log "setting the build's prefix to $prefix (was $current)"
            meson configure "$bdir" -Dprefix="$prefix" >/dev/null
        fi
    else
        log "configuring a release build in $bdir"
        meson setup --buildtype=release -Dtests=false --prefix="$prefix" "$bdir" "$source_dir" >/dev/null ||
            die "meson setup failed (missing build packages? see scripts/deps.sh, group build)"
    fi
    meson compile -C "$bdir" >/dev/null || die "the build failed: run 'meson compile -C $bdir' to see why"
    if [[ -n $root ]]; then
        meson install -C "$bdir" --no-rebuild --quiet --destdir "$root" >/dev/null
    else
        meson install -C "$bdir" --no-rebuild --quiet >/dev/null
    fi
    log "installed lbd and webd in $prefix/sbin, lbctl and webctl in $prefix/bin${root:+ (staged in $root)}"
    put_file "$source_dir/README.md" "$prefix/share/doc/lbd/README.md" 0644 root root
}

ensure_user() {
    local name=$1 comment=$2
    if ! real_install; then
        return 0
    fi
    if getent passwd "$name" >/dev/null; then
        return 0
    fi
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "$comment" "$name"
    log "created system user $name"
}

# Copies systemd/<unit> to /etc/systemd/system, with the prefix of this installation.
install_unit() {
    local unit=$1 tmp
    tmp=$(mktemp)
    {
        echo "$UNIT_MARKER"
        sed "s#/usr/local/#$prefix/#g" "$source_dir/systemd/$unit"
    } >"$tmp"
    put_file "$tmp" "/etc/systemd/system/$unit" 0644 root root
    rm -f -- "$tmp"
}

# Sets source_url, where the user-data fetch the source: LBD_SOURCE_URL, else the source tree's git
# remote when it is an https URL, else nothing (the instances' image must then have lbd).
resolve_source_url() {
    source_url=${LBD_SOURCE_URL:-}
    if [[ -z $source_url ]] && command -v git >/dev/null && [[ -e $source_dir/.git ]]; then
        source_url=$(git -C "$source_dir" remote get-url origin 2>/dev/null || true)
        [[ $source_url == https://* ]] || source_url=""
    fi
    if [[ -n $source_url ]] && ! valid_url "$source_url"; then
        die "LBD_SOURCE_URL: '$source_url' is not a URL the user-data can use"
    fi
    return 0
}

# Prints the network of an IPv4 interface address given as ADDRESS/PREFIX ("10.0.1.20/24" -> "10.0.1.0/24").
ipv4_network() {
    local addr=${1%/*} len=${1#*/} a b c d n mask
    IFS=. read -r a b c d <<<"$addr"
    n=$(((a << 24) | (b << 16) | (c << 8) | d))
    mask=$(((0xffffffff << (32 - len)) & 0xffffffff))
    n=$((n & mask))
    echo "$((n >> 24 & 255)).$((n >> 16 & 255)).$((n >> 8 & 255)).$((n & 255))/$len"
}

# Prints the subnets of this machine's global IPv4 addresses, comma-separated (none: nothing). A prefix
# shorter than /8 is left out: trusting it would trust nearly everyone.
local_networks() {
    local cidr out=""
    command -v ip >/dev/null || return 0
    while read -r cidr; do
        [[ $cidr =~ ^[0-9.]+/([0-9]{1,2})$ ]] || continue
        ((BASH_REMATCH[1] >= 8 && BASH_REMATCH[1] <= 32)) || continue
        valid_ipv4 "${cidr%/*}" || continue
        out+="${out:+,}$(ipv4_network "$cidr")"
    done < <(ip -o -4 addr show scope global 2>/dev/null | awk '{ print $4 }')
    echo "$out"
}

# Prints the CIDR list <list> with the item 'local' replaced by local_networks (or dropped if there are none).
expand_local() {
    local item out="" nets
    local -a items
    IFS=, read -ra items <<<"$1"
    for item in "${items[@]}"; do
        if [[ $item == local ]]; then
            nets=$(local_networks)
            [[ -z $nets ]] || out+="${out:+,}$nets"
        else
            out+="${out:+,}$item"
        fi
    done
    echo "$out"
}

# Prints the user-data template <src> with the marker, source_url and this machine's subnets (where the
# load balancer's requests come from, which the web host's webd must trust) written in.
render_user_data() {
    local src=$1 url=$source_url nets
    nets=$(local_networks)
    # The marker goes after the "#!" line; only the lines "LBD_SOURCE_URL=..." and "LBD_LB_NETWORKS=..."
    # change (neither value has a quote, blank or backslash).
    awk -v url="$url" -v nets="$nets" -v marker="$MARKER" '
        NR == 1 { print; print marker; next }
        /^LBD_SOURCE_URL=/ && !done { print "LBD_SOURCE_URL=\x27" url "\x27"; done = 1; next }
        /^LBD_LB_NETWORKS=/ && !done_nets { print "LBD_LB_NETWORKS=\x27" nets "\x27"; done_nets = 1; next }
        { print }' "$src"
}

write_credentials() {
    put_content /etc/lbd/credentials 0600 lbd lbd <<EOF
$MARKER
[default]
aws_access_key_id = $access_key_id
aws_secret_access_key = $secret_access_key
EOF
}

# Runs `lbctl provision` and reads its KEY=VALUE lines, each checked before use.
run_provision() {
    local lbctl out line key value web_user_data lb_port relay_before
    local -a args
    lbctl=${LBD_LBCTL:-$(dest "$prefix/bin/lbctl")}
    [[ -x $lbctl ]] || die "$lbctl not found: the build did not install lbctl"
    web_user_data=$(mktemp)
    render_user_data "$source_dir/scripts/cloud-init-web.sh" >"$web_user_data"
    lb_port=${listen##*:}
    args=(provision --tag "$tag" --web-user-data "$web_user_data" --lb-port "$lb_port" --backend-port 80
        --web-port 8080)
    [[ -z $region ]] || args+=(--region "$region")
    [[ -z $endpoint ]] || args+=(--endpoint "$endpoint")
    $instance_role || args+=(--credentials-file "$(dest /etc/lbd/credentials)")
    [[ -z $subnet ]] || args+=(--subnet "$subnet")
    [[ -z $image ]] || args+=(--image "$image")
    [[ -z $instance_type ]] || args+=(--instance-type "$instance_type")
    [[ -z $key_name ]] || args+=(--key-name "$key_name")
    # The web tier's private CA stays on this host (staged under --root like every other file).
    args+=(--web-tls-dir "$(dest /etc/lbd/web-tls)")
    ! $web_plain_http || args+=(--web-plain-http)
    ! $relay_plain_http || args+=(--relay-plain-http)
    log "provisioning: lbctl ${args[*]}"
    # A renewed relay certificate reaches new relays once lbd reads it again (restarted below).
    relay_before=$(cat -- "$(dest /etc/lbd/web-tls)/relay.pem" 2>/dev/null || true)
    if ! out=$("$lbctl" "${args[@]}"); then
        rm -f -- "$web_user_data"
        die "lbctl provision failed (its messages are above)"
    fi
    rm -f -- "$web_user_data"
    while IFS= read -r line; do
        [[ $line =~ ^([A-Z][A-Z0-9_]*)=(.*)$ ]] || continue
        key=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}
        case "$key" in
            LBD_SECURITY_GROUP_LB | LBD_SECURITY_GROUP_WEB)
                valid_sg "$value" || die "lbctl provision: $key='$value' is not a security group id"
                ;;
            LBD_SECURITY_GROUP_BACKEND)
                valid_sg "$value" || die "lbctl provision: $key='$value' is not a security group id"
                [[ -n $security_groups ]] || security_groups=$value
                ;;
            LBD_IMAGE)
                valid_image "$value" || die "lbctl provision: $key='$value' is not an AMI id"
                image=$value
                ;;
            LBD_UPSTREAM)
                valid_addr "$value" || die "lbctl provision: $key='$value' is not an ADDRESS:PORT"
                upstream=$value
                ;;
            LBD_WEB_INSTANCE)
                valid_instance_id "$value" || die "lbctl provision: $key='$value' is not an instance id"
                web_instance=$value
                ;;
            LBD_SUBNET)
                valid_subnet "$value" || die "lbctl provision: $key='$value' is not a subnet id"
                [[ -n $subnet ]] || subnet=$value
                ;;
            LBD_WEB_CA)
                [[ -z $value || $value == "$(dest /etc/lbd/web-tls)/ca.pem" ]] ||
                    die "lbctl provision: $key='$value' is not the CA it was given"
                web_ca=$value
                ;;
            LBD_WEB_NAME)
                [[ -z $value ]] || valid_domain "$value" || die "lbctl provision: $key='$value' is not a DNS name"
                web_name=$value
                ;;
            LBD_RELAY_CERT)
                [[ $value == "$(dest /etc/lbd/web-tls)/relay.pem" ]] ||
                    die "lbctl provision: $key='$value' is not in the directory it was given"
                relay_cert=$value
                ;;
            LBD_RELAY_KEY)
                [[ $value == "$(dest /etc/lbd/web-tls)/relay.key" ]] ||
                    die "lbctl provision: $key='$value' is not in the directory it was given"
                relay_key=$value
                ;;
            LBD_RELAY_NAME)
                valid_domain "$value" || die "lbctl provision: $key='$value' is not a DNS name"
                relay_name=$value
                ;;
            *) continue ;;
        esac
        log "provisioned $key=$value"
    done <<<"$out"
    [[ -n $upstream ]] || die "lbctl provision did not report the web host (LBD_UPSTREAM)"
    if [[ -n $relay_cert || -n $relay_key || -n $relay_name ]]; then
        [[ -n $relay_cert && -n $relay_key && -n $relay_name ]] ||
            die "lbctl provision reported only part of the relays' TLS (LBD_RELAY_CERT, LBD_RELAY_KEY, LBD_RELAY_NAME)"
        # lbd reads the relays' key to put it into their user data; nothing else on this host may.
        real_install && chown lbd:lbd -- "$relay_key"
        chmod 0600 -- "$relay_key"
        [[ $(cat -- "$relay_cert") == "$relay_before" ]] || changed=true
    fi
    [[ -n $image ]] || die "lbctl provision did not report an image (LBD_IMAGE): give --image"
}

# Request bodies larger than any API behind lbd takes (webd's own limit is 64k) are refused at the front
# door with 413 instead of being streamed to a backend that refuses them anyway (README: `max_body_size`).
limits_config() {
    echo "[limits]"
    echo "max_body_size = 1m"
    echo
}

# The certificate lbd serves: /etc/lbd/tls/<name>.pem and .key; true when it is there.
tls_name() {
    if [[ -n $domain ]]; then echo "$domain"; else echo site; fi
}

have_certificate() {
    [[ -n $tls_cert || ( -n $domain && -f $(dest "/etc/lbd/tls/$(tls_name).pem") ) ]]
}

lb_config() {
    echo "$MARKER"
    echo "[lbd]"
    if have_certificate; then
        echo "listen = $listen redirect, $tls_listen tls"
    else
        echo "listen = $listen"
    fi
    echo "admin = $admin"
    echo
    if [[ -n $tls_cert || -n $domain || -n $relay_cert ]]; then
        echo "[tls]"
        have_certificate && echo "certificate = /etc/lbd/tls/$(tls_name).pem /etc/lbd/tls/$(tls_name).key"
        [[ -z $domain ]] || echo "acme_challenge_dir = /var/lib/lbd/acme/.well-known/acme-challenge"
        if [[ -n $relay_cert ]]; then
            # The relays listen with the certificate `lbctl provision` issued them: verified here.
            echo "backend = on"
            echo "backend_ca = /etc/lbd/web-tls/ca.pem"
            echo "backend_name = $relay_name"
        fi
        echo
    fi
    echo "[health]"
    echo "path = /healthcheck"
    echo
    limits_config
    echo "[pool]"
    echo "provider = $provider"
    case "$provider" in
        static) echo "backends = $upstream" ;;
        *)
            echo "desired = $desired"
            [[ $provider == local ]] || echo "port = 80"
            ;;
    esac
    [[ -z $networks ]] || echo "networks = $networks"
    if [[ $provider == local ]]; then
        echo
        echo "[local]"
        echo "upstream = $upstream"
    fi
    if [[ $provider == ec2 ]]; then
        echo
        echo "[ec2]"
        [[ -z $region ]] || echo "region = $region"
        [[ -z $endpoint ]] || echo "endpoint = $endpoint"
        echo "image = $image"
        [[ -z $instance_type ]] || echo "instance_type = $instance_type"
        [[ -z $subnet ]] || echo "subnet = $subnet"
        [[ -z $security_groups ]] || echo "security_groups = $security_groups"
        [[ -z $key_name ]] || echo "key_name = $key_name"
        echo "user_data = /etc/lbd/backend-user-data.sh"
        echo "upstream = $upstream"
        if [[ -n $web_ca ]]; then
            echo "upstream_ca = /etc/lbd/web-tls/ca.pem"
            echo "upstream_name = $web_name"
        fi
        if [[ -n $relay_cert ]]; then
            echo "relay_tls_cert = /etc/lbd/web-tls/relay.pem"
            echo "relay_tls_key = /etc/lbd/web-tls/relay.key"
        fi
        echo "tag = $tag"
        echo "previous_settings = /var/lib/lbd/previous-launch-settings"
        $instance_role || echo "credentials_file = /etc/lbd/credentials"
    fi
    lease_config
}

relay_config() {
    echo "$MARKER"
    echo "[lbd]"
    if [[ -n $tls_cert ]]; then echo "listen = $listen tls"; else echo "listen = $listen"; fi
    echo "admin = $admin"
    echo
    echo "[health]"
    echo "path = /healthcheck"
    echo
    limits_config
    echo "[pool]"
    echo "provider = static"
    echo "backends = $upstream"
    if [[ -n $upstream_ca || -n $tls_cert ]]; then
        echo
        echo "[tls]"
        [[ -z $tls_cert ]] || echo "certificate = /etc/lbd/relay-tls.pem /etc/lbd/relay-tls.key"
    fi
    if [[ -n $upstream_ca ]]; then
        echo "backend = on"
        echo "backend_ca = /etc/lbd/upstream-ca.pem"
        [[ -z $upstream_name ]] || echo "backend_name = $upstream_name"
    fi
}

# Checks a written lbd configuration with the installed lbd; the paths it names are looked up under
# --root when staging.
check_lbd_config() {
    local path=$1 lbd
    local -a sets=()
    lbd=$(dest "$prefix/sbin/lbd")
    if [[ -n $root ]]; then
        if grep -q '^user_data = ' "$(dest "$path")"; then
            sets+=(--set "ec2.user_data=$(dest /etc/lbd/backend-user-data.sh)")
        fi
        if grep -q '^upstream_ca = ' "$(dest "$path")"; then
            sets+=(--set "ec2.upstream_ca=$(dest /etc/lbd/web-tls/ca.pem)")
        fi
        if grep -q '^relay_tls_cert = ' "$(dest "$path")"; then
            sets+=(--set "ec2.relay_tls_cert=$(dest /etc/lbd/web-tls/relay.pem)"
                --set "ec2.relay_tls_key=$(dest /etc/lbd/web-tls/relay.key)")
        fi
        if grep -q '^credentials_file = ' "$(dest "$path")"; then
            sets+=(--set "ec2.credentials_file=$(dest /etc/lbd/credentials)")
        fi
        if grep -q '^certificate = /etc/lbd/tls/' "$(dest "$path")"; then
            sets+=(--set "tls.certificate=$(dest "/etc/lbd/tls/$(tls_name).pem") $(dest "/etc/lbd/tls/$(tls_name).key")")
        fi
        if grep -q '^certificate = /etc/lbd/relay-tls.pem' "$(dest "$path")"; then
            sets+=(--set "tls.certificate=$(dest /etc/lbd/relay-tls.pem) $(dest /etc/lbd/relay-tls.key)")
        fi
        if grep -q '^backend_ca = /etc/lbd/upstream-ca.pem' "$(dest "$path")"; then
            sets+=(--set "tls.backend_ca=$(dest /etc/lbd/upstream-ca.pem)")
        fi
        if grep -q '^backend_ca = /etc/lbd/web-tls/ca.pem' "$(dest "$path")"; then
            sets+=(--set "tls.backend_ca=$(dest /etc/lbd/web-tls/ca.pem)")
        fi
        if grep -q '^acme_challenge_dir = ' "$(dest "$path")"; then
            sets+=(--set "tls.acme_challenge_dir=$(dest /var/lib/lbd/acme/.well-known/acme-challenge)")
        fi
    fi
    "$lbd" --config "$(dest "$path")" "${sets[@]}" --check-config >/dev/null ||
        die "lbd rejects the configuration it was given in $path (see above)"
}

install_lb() {
    ensure_user lbd "lbd load balancer"
    make_dir /etc/lbd 0750 root lbd
    if [[ $provider == ec2 ]]; then
        resolve_source_url
        $instance_role || write_credentials
        put_content /etc/lbd/backend-user-data.sh 0640 root lbd \
            < <(render_user_data "$source_dir/scripts/cloud-init-backend.sh")
        if [[ $provision == true ]]; then
            run_provision
        fi
    fi
    install_tls_files
    write_lease
    put_content /etc/lbd/lbd.conf 0640 root lbd < <(lb_config)
    check_lbd_config /etc/lbd/lbd.conf
    install_unit lbd.service
}

# certbot's deploy hook: each renewed certificate is copied next to lbd's configuration, readable by lbd,
# whole (written aside, then renamed), and lbd reloads. certbot runs it as root with RENEWED_LINEAGE.
deploy_hook() {
    cat <<HOOK
#!/bin/sh
$MARKER
set -eu
name=$(tls_name)
dir=\${LBD_TLS_DIR:-/etc/lbd/tls}
[ -n "\${RENEWED_LINEAGE:-}" ] || { echo "lbd.sh: RENEWED_LINEAGE is not set (run by certbot)" >&2; exit 1; }
[ "\$(basename "\$RENEWED_LINEAGE")" = "\$name" ] || exit 0
group=\${LBD_GROUP:-lbd}
install -m 0640 -o root -g "\$group" "\$RENEWED_LINEAGE/fullchain.pem" "\$dir/.\$name.pem.new"
install -m 0640 -o root -g "\$group" "\$RENEWED_LINEAGE/privkey.pem" "\$dir/.\$name.key.new"
mv -f "\$dir/.\$name.key.new" "\$dir/\$name.key"
mv -f "\$dir/.\$name.pem.new" "\$dir/\$name.pem"
systemctl reload lbd.service
HOOK
}

install_tls_files() {
    [[ -n $tls_cert || -n $domain ]] || return 0
    make_dir /etc/lbd/tls 0750 root lbd
    if [[ -n $tls_cert ]]; then
        put_file "$tls_cert" "/etc/lbd/tls/$(tls_name).pem" 0640 root lbd
        put_file "$tls_key" "/etc/lbd/tls/$(tls_name).key" 0640 root lbd
        return 0
    fi
    make_dir /var/lib/lbd 0755 root root
    make_dir /var/lib/lbd/acme 0755 root root
    make_dir /var/lib/lbd/acme/.well-known 0755 root root
    make_dir /var/lib/lbd/acme/.well-known/acme-challenge 0755 root root
    put_content /etc/letsencrypt/renewal-hooks/deploy/lbd.sh 0755 root root < <(deploy_hook)
}

# With --domain on a real installation: lbd serves the challenge on the plain listener, certbot gets the
# certificate through it, the hook installs it, and lbd restarts with the HTTPS listener.
obtain_certificate() {
    [[ -n $domain ]] && real_install || return 0
    have_certificate && return 0
    command -v certbot >/dev/null || {
        $packages && DEBIAN_FRONTEND=noninteractive apt-get install -y -q certbot >/dev/null
    } || die "certbot is needed for --domain: apt-get install certbot"
    start_service lbd.service
    log "asking Let's Encrypt for a certificate for $domain (the challenge is served by lbd on $listen)"
    certbot certonly --webroot -w /var/lib/lbd/acme -d "$domain" -m "$acme_email" --agree-tos \
        --non-interactive --keep-until-expiring ||
        die "certbot could not get a certificate for $domain: is its DNS pointing here, port 80 open?"
    RENEWED_LINEAGE="/etc/letsencrypt/live/$domain" sh "$(dest /etc/letsencrypt/renewal-hooks/deploy/lbd.sh)"
    put_content /etc/lbd/lbd.conf 0640 root lbd < <(lb_config)
    check_lbd_config /etc/lbd/lbd.conf
    systemd_running && systemctl enable --now --quiet certbot.timer
    changed=true
}

install_backend() {
    ensure_user lbd "lbd relay"
    make_dir /etc/lbd 0750 root lbd
    [[ -z $upstream_ca ]] || put_file "$upstream_ca" /etc/lbd/upstream-ca.pem 0640 root lbd
    if [[ -n $tls_cert ]]; then
        put_file "$tls_cert" /etc/lbd/relay-tls.pem 0640 root lbd
        put_file "$tls_key" /etc/lbd/relay-tls.key 0640 root lbd
    fi
    put_content /etc/lbd/relay.conf 0640 root lbd < <(relay_config)
    check_lbd_config /etc/lbd/relay.conf
    install_unit lbd-relay.service
}

# Prints the password of the local database role: the one kept in /etc/webd/pgpass, else a new one.
database_password() {
    local pgpass line
    pgpass=$(dest /etc/webd/pgpass)
    if [[ -f $pgpass ]]; then
        line=$(grep -v '^#' "$pgpass" | grep -m 1 '^\*:\*:webd:webd:' || true)
        if [[ -n $line && ${line##*:} =~ ^[0-9a-f]{32,}$ ]]; then
            echo "${line##*:}"
            return 0
        fi
    fi
    od -An -tx1 -N24 /dev/urandom | tr -d ' \n'
}

psql_postgres() {
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres "$@"
}

# Creates (or updates) the role and database 'webd' in the local PostgreSQL server. The password goes to
# psql on its standard input, never on a command line.
setup_database() {
    local password=$1 tries
    command -v psql >/dev/null || die "psql not found: install the 'web' packages (scripts/deps.sh) or give --database"
    if command -v pg_lsclusters >/dev/null && ! pg_lsclusters -h | grep -q ' online'; then
        log "starting the PostgreSQL cluster"
        if systemd_running; then
            systemctl start postgresql.service
        else
            local cluster
            cluster=$(pg_lsclusters -h | awk 'NR == 1 { print $1, $2 }')
            [[ -n $cluster ]] || die "no PostgreSQL cluster exists (pg_createcluster one, or give --database)"
            # shellcheck disable=SC2086 # "VERSION NAME"
            pg_ctlcluster $cluster start
        fi
    fi
    for ((tries = 0; tries < 60; tries++)); do
        pg_isready -q -h /run/postgresql && break
        sleep 1
    done
    pg_isready -q -h /run/postgresql || die "PostgreSQL does not answer on /run/postgresql"
    if [[ -z $(psql_postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'webd'") ]]; then
        psql_postgres -c "CREATE ROLE webd LOGIN"
        log "created the database role webd"
    fi
    printf "ALTER ROLE webd WITH LOGIN PASSWORD '%s';\n" "$password" | psql_postgres -f -
    if [[ -z $(psql_postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'webd'") ]]; then
        psql_postgres -c "CREATE DATABASE webd OWNER webd"
        log "created the database webd"
    fi
}

# webd's certificate: the user's (--tls-cert/--tls-key) or one for --tls-private-ca NAME from a private CA
# made here once. Written to /etc/webd/tls/web.pem and web.key.
install_web_tls() {
    [[ -n $tls_cert || -n $tls_private_ca ]] || return 0
    make_dir /etc/webd/tls 0750 root webd
    if [[ -n $tls_cert ]]; then
        put_file "$tls_cert" /etc/webd/tls/web.pem 0640 root webd
        put_file "$tls_key" /etc/webd/tls/web.key 0640 root webd
        return 0
    fi
    command -v openssl >/dev/null || die "--tls-private-ca needs the openssl command: apt-get install openssl"
    local dir ca ca_key cert key tmp
    dir=$(dest /etc/webd/tls)
    ca=$dir/ca.pem ca_key=$dir/ca.key cert=$dir/web.pem key=$dir/web.key
    if [[ ! -s $ca || ! -s $ca_key ]]; then
        (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=webd private CA" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$ca_key" -out "$ca" 2>/dev/null) ||
            die "openssl could not make the private CA in /etc/webd/tls"
        chmod 0644 -- "$ca"
        chmod 0600 -- "$ca_key"
        log "made a private CA: /etc/webd/tls/ca.pem (copy it to each relay: --upstream-ca)"
    fi
    # A certificate for the name, from this CA, with 30 days left at least: kept; else a new one.
    if [[ -s $cert && -s $key ]] && openssl x509 -in "$cert" -noout -checkhost "$tls_private_ca" 2>/dev/null |
        grep -q "does match" && openssl x509 -in "$cert" -noout -checkend 2592000 >/dev/null 2>&1 &&
        openssl verify -CAfile "$ca" "$cert" >/dev/null 2>&1; then
        return 0
    fi
    tmp=$(mktemp -d)
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n' \
        "$tls_private_ca" >"$tmp/ext"
    (umask 077 && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$tls_private_ca" \
        -keyout "$tmp/key" -out "$tmp/csr" 2>/dev/null &&
        openssl x509 -req -in "$tmp/csr" -CA "$ca" -CAkey "$ca_key" -CAcreateserial -CAserial "$tmp/serial" \
            -days 825 -extfile "$tmp/ext" -out "$tmp/cert" 2>/dev/null) || {
        rm -rf -- "$tmp"
        die "openssl could not make the certificate for $tls_private_ca"
    }
    put_file "$tmp/key" /etc/webd/tls/web.key 0640 root webd
    put_file "$tmp/cert" /etc/webd/tls/web.pem 0640 root webd
    rm -rf -- "$tmp"
    log "made webd's certificate for $tls_private_ca (825 days; run the installer again to renew it)"
}

# The [webd] lines of the certificate, when there is one.
web_tls_config() {
    [[ -n $tls_cert || -n $tls_private_ca ]] || return 0
    echo "tls_cert = /etc/webd/tls/web.pem"
    echo "tls_key = /etc/webd/tls/web.key"
}

install_web() {
    local password conninfo
    ensure_user webd "webd application server"
    make_dir /etc/webd 0750 root webd
    if [[ -n ${given[--database]:-} ]]; then
        conninfo=$database
    else
        password=$(database_password)
        put_content /etc/webd/pgpass 0600 webd webd <<EOF
$MARKER
*:*:webd:webd:$password
EOF
        conninfo="host=/run/postgresql dbname=webd user=webd passfile=/etc/webd/pgpass"
        if real_install; then
            setup_database "$password"
        else
            log "--root: not creating the database role and database webd"
        fi
    fi
    install_web_tls
    put_content /etc/webd/webd.conf 0640 root webd <<EOF
$MARKER
[webd]
listen = $listen
database = $conninfo
secret_file = /var/lib/webd/jwt.key
trusted_proxies = ${trusted_proxies//,/, }
$(web_tls_config)
EOF
    local webd
    webd=$(dest "$prefix/sbin/webd")
    local sets=()
    # Staged with --root: the certificate is checked where it was written.
    if [[ -n $tls_cert || -n $tls_private_ca ]]; then
        sets+=(--set "webd.tls_cert=$(dest /etc/webd/tls/web.pem)" --set "webd.tls_key=$(dest /etc/webd/tls/web.key)")
    fi
    env -u WEBD_DATABASE "$webd" --config "$(dest /etc/webd/webd.conf)" "${sets[@]}" --check-config >/dev/null ||
        die "webd rejects the configuration in /etc/webd/webd.conf (see above)"
    install_unit webd.service
}

start_service() {
    local unit=$1
    if ! systemd_running; then
        if real_install; then
            log "systemd is not running here: start $unit when it is (systemctl enable --now $unit)"
        fi
        return 0
    fi
    systemctl daemon-reload
    systemctl enable --quiet "$unit"
    if ! systemctl is-active --quiet "$unit"; then
        log "starting $unit"
        systemctl start "$unit" || die "$unit failed to start: journalctl -u $unit"
    elif $changed; then
        log "restarting $unit (its files changed)"
        systemctl restart "$unit" || die "$unit failed to restart: journalctl -u $unit"
    fi
}

do_uninstall() {
    local unit f
    log "uninstalling${root:+ from $root}"
    for unit in lbd.service lbd-relay.service webd.service; do
        [[ -f $(dest "/etc/systemd/system/$unit") ]] || continue
        if systemd_running; then
            systemctl disable --now --quiet "$unit" || warn "could not stop $unit"
        fi
        remove_file "/etc/systemd/system/$unit" "$UNIT_MARKER"
    done
    systemd_running && systemctl daemon-reload
    for f in "$prefix/sbin/lbd" "$prefix/sbin/webd" "$prefix/bin/lbctl" "$prefix/bin/webctl" \
        "$prefix/share/doc/lbd/README.md"; do
        remove_file "$f"
    done
    remove_dir_if_empty "$prefix/share/doc/lbd"
    remove_file /etc/lbd/upstream-ca.pem
    for f in /etc/lbd/lbd.conf /etc/lbd/relay.conf /etc/lbd/credentials /etc/lbd/lease.conninfo /etc/lbd/backend-user-data.sh \
        /etc/webd/webd.conf /etc/webd/pgpass /etc/letsencrypt/renewal-hooks/deploy/lbd.sh; do
        remove_file "$f" "$MARKER"
    done
    for f in web.pem web.key ca.pem ca.key; do
        remove_file "/etc/webd/tls/$f"
    done
    remove_dir_if_empty /etc/webd/tls
    remove_dir_if_empty /etc/lbd
    remove_dir_if_empty /etc/webd
    if real_install; then
        for f in lbd webd; do
            if getent passwd "$f" >/dev/null; then
                userdel "$f" && log "removed system user $f"
            fi
        done
    fi
    log "kept the data: /var/lib/webd and the database (drop it with: runuser -u postgres -- dropdb webd)"
}

summary() {
    local host
    case "$role" in
        lb)
            host=${listen%:*}
            if [[ $host == 0.0.0.0 || $host == "[::]" ]]; then
                host=$({ hostname -I 2>/dev/null || true; } | awk '{ print $1 }')
            fi
            log "done: the load balancer serves http://${host:-THIS-HOST}:${listen##*:}/"
            log "web host: $upstream${web_instance:+ (instance $web_instance)}"
            log "watch it: $prefix/bin/lbctl status --admin $admin   (and: journalctl -u lbd)"
            ;;
        backend)
            log "done: the relay listens on $listen and forwards to $upstream"
            log "watch it: systemctl status lbd-relay; journalctl -u lbd-relay"
            ;;
        web)
            log "done: webd serves on $listen${tls_cert:+ (HTTPS)}${tls_private_ca:+ (HTTPS)}"
            if [[ -n $tls_private_ca ]]; then
                log "relays: installer.sh --role backend --upstream THIS-HOST:${listen##*:} --upstream-ca COPY-OF-/etc/webd/tls/ca.pem --upstream-name $tls_private_ca"
            fi
            log "watch it: systemctl status webd; journalctl -u webd"
            ;;
    esac
}

main() {
    changed=false
    web_instance=""
    source_url=""
    parse_options "$@"
    validate
    if [[ -z $source_dir ]]; then
        source_dir=$(cd -- "$INSTALLER_DIR/.." && pwd)
    fi
    [[ -f $source_dir/meson.build && -d $source_dir/systemd ]] ||
        usage_error "--source: '$source_dir' is not the lbd source tree"
    source_dir=$(cd -- "$source_dir" && pwd)
    if real_install && ((EUID != 0)); then
        die "installing into / needs root (or stage it with --root DIR)"
    fi

    if $uninstall; then
        do_uninstall
        return 0
    fi

    log "installing role $role${root:+ into $root}"
    install_packages
    build_and_install
    case "$role" in
        lb) install_lb ;;
        backend) install_backend ;;
        web) install_web ;;
    esac
    [[ $role != lb ]] || obtain_certificate
    case "$role" in
        lb) start_service lbd.service ;;
        backend) start_service lbd-relay.service ;;
        web) start_service webd.service ;;
    esac
    summary
}

main "$@"
