#!/bin/bash
# Runs at every boot of the web host (a cloud-init per-boot script, installed by scripts/cloud-init-web.sh
# when webd serves HTTPS): when the instance's user data carries another certificate for webd than
# /etc/webd/tls/web.pem, installs it and its key there and reloads webd.
#
# This is how a renewed certificate reaches the web host: `lbctl provision` renews webd's certificate
# (with fewer than 30 days left, or --renew-web-cert) by stopping the web host, putting the new
# certificate and key in its user data (EC2 changes the user data of a stopped instance only) and
# starting it again. The user data is read from the instance metadata service (IMDSv2), which is the
# current one; LBD_WEB_USER_DATA names a file to read instead. WEBD_TLS_DIR (default /etc/webd/tls),
# WEBD_GROUP (default webd) and SYSTEMCTL (default systemctl) exist for tests. Never prints a key.
set -euo pipefail

DIR=${WEBD_TLS_DIR:-/etc/webd/tls}
GROUP=${WEBD_GROUP:-webd}
SYSTEMCTL=${SYSTEMCTL:-systemctl}

say() {
    echo "lbd-web-tls: $*"
}

if [[ -n ${LBD_WEB_USER_DATA:-} ]]; then
    ud=$(cat -- "$LBD_WEB_USER_DATA")
else
    token=$(curl -sf -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
        http://169.254.169.254/latest/api/token) || {
        say "the instance metadata service does not answer: webd's certificate left as it is"
        exit 0
    }
    ud=$(curl -sf -m 5 -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/user-data) || {
        say "no user data from the instance metadata service: webd's certificate left as it is"
        exit 0
    }
fi

cert_re="LBD_WEB_TLS_CERT='([^']*)'"
key_re="LBD_WEB_TLS_KEY='([^']*)'"
cert="" key=""
[[ $ud =~ $cert_re ]] && cert=${BASH_REMATCH[1]}
[[ $ud =~ $key_re ]] && key=${BASH_REMATCH[1]}
if [[ -z $cert || -z $key ]]; then
    say "no certificate for webd in the user data: nothing to do"
    exit 0
fi
if [[ $cert != "-----BEGIN CERTIFICATE-----"* || $key != "-----BEGIN PRIVATE KEY-----"* ]]; then
    say "webd's certificate or key in the user data is not PEM: left as it is"
    exit 1
fi
if [[ -f $DIR/web.pem && "$(cat -- "$DIR/web.pem")" == "$cert" ]]; then
    say "webd's certificate is the one in the user data"
    exit 0
fi

# Written aside with their final mode, then renamed: webd never reads half a file, the key is never
# readable by others.
(
    umask 077
    printf '%s\n' "$key" >"$DIR/.web.key.new"
    printf '%s\n' "$cert" >"$DIR/.web.pem.new"
)
chgrp "$GROUP" "$DIR/.web.key.new" "$DIR/.web.pem.new"
chmod 0640 "$DIR/.web.key.new" "$DIR/.web.pem.new"
mv -f "$DIR/.web.key.new" "$DIR/web.key"
mv -f "$DIR/.web.pem.new" "$DIR/web.pem"
say "installed webd's certificate from the user data; reloading webd"
"$SYSTEMCTL" reload webd.service
