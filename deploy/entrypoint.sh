#!/bin/sh
# The onionpost image's entrypoint: runs `onionpost "$@"`, after one container-only setting:
# ONIONPOST_TOR_TARGET_HOST=auto becomes this container's own IP address. Tor (another
# container) forwards identities' onion ports to an IP, never a name; a container's IP is only
# known once it runs, and may change when it is re-created.
set -eu
if [ "${ONIONPOST_TOR_TARGET_HOST:-}" = auto ]; then
  address=$(hostname -I 2>/dev/null | awk '{print $1}')
  if [ -z "$address" ]; then
    echo "onionpost-entrypoint: ONIONPOST_TOR_TARGET_HOST=auto, but this container has no IP address" >&2
    exit 2
  fi
  export ONIONPOST_TOR_TARGET_HOST="$address"
fi
exec onionpost "$@"
