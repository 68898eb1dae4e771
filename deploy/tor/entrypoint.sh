#!/bin/sh
# Writes a torrc for onionpost and runs tor in the foreground.
set -eu
: "${TOR_CONTROL_PASSWORD:?set TOR_CONTROL_PASSWORD (the compose .env file holds it)}"
hash=$(tor --quiet --hash-password "$TOR_CONTROL_PASSWORD" | tail -n 1)
mkdir -p /var/lib/tor/data && chmod 0700 /var/lib/tor/data
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
TORRC
exec tor -f /var/lib/tor/torrc
