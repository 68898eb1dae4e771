#!/bin/sh
# The tor container of an onionpost carrier: writes a torrc and runs tor in the foreground.
# Control and SOCKS ports listen on the container's networks (the compose network; nothing
# publishes them); control auth is a hashed password made from TOR_CONTROL_PASSWORD at each
# start. TOR_INCLUDE names a torrc fragment read last (bridges; a private network's
# DirAuthority lines); TOR_EXTRA_CONFIG is appended verbatim.
set -eu
: "${TOR_CONTROL_PASSWORD:?set TOR_CONTROL_PASSWORD (the compose .env file holds it; deploy/init-env.sh writes it)}"
hash=$(tor --quiet --hash-password "$TOR_CONTROL_PASSWORD" | tail -n 1)
case "$hash" in
  16:*) ;;
  *) echo "tor-entrypoint: tor --hash-password gave no hash" >&2; exit 2 ;;
esac
mkdir -p /var/lib/tor/data && chmod 0700 /var/lib/tor/data
include=""
if [ -n "${TOR_INCLUDE:-}" ]; then
  [ -r "$TOR_INCLUDE" ] || { echo "tor-entrypoint: TOR_INCLUDE=$TOR_INCLUDE is not readable" >&2; exit 2; }
  include="%include $TOR_INCLUDE"
fi
cat > /var/lib/tor/torrc <<TORRC
DataDirectory /var/lib/tor/data
ControlPort 0.0.0.0:9051
HashedControlPassword $hash
SocksPort 0.0.0.0:9050
SocksPolicy accept 10.0.0.0/8
SocksPolicy accept 172.16.0.0/12
SocksPolicy accept 192.168.0.0/16
SocksPolicy reject *
Log notice stdout
${TOR_EXTRA_CONFIG:-}
$include
TORRC
exec tor -f /var/lib/tor/torrc --defaults-torrc /dev/null
