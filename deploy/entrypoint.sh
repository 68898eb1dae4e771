#!/bin/sh
# The onionpost image's entrypoint: runs `onionpost "$@"`.
#
# ONIONPOST_TOR_TARGET_HOST=auto (compose) is resolved by onionpost itself: the
# container's address on the route to tor's control port. Tor, in another container, forwards
# identities' onion ports to an IP, never a name; a container's IP is only known once it runs,
# and a container on several networks (compose keeps tor on a network of its own) must give
# tor the address on tor's network.
set -eu
exec onionpost "$@"
