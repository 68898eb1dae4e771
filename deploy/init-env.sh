#!/bin/sh
# Writes the .env file docker-compose.yml reads: fresh secrets and the layout. Run it once,
# before the first `docker compose up -d`; it refuses to overwrite an existing file (the
# secrets seal the carrier's keys and mail: a new ONIONPOST_SECRET cannot open old data).
#
#   deploy/init-env.sh [--distributed] [--postgres] [--observability] [--tors N]
#                      [--gateway DOMAIN [--dkim-key PEM] [--rspamd]] [--file PATH]
#
#   --distributed    one container per service (COMPOSE_PROFILES=distributed instead of single)
#   --postgres       a PostgreSQL container for every service's data (instead of SQLite)
#   --observability  traces to the OpenTelemetry collector, metrics to Prometheus
#   --tors N         a pool of N tors (1 to 4; the default 1): identities are spread over them
#   --gateway DOMAIN the clearnet gateway for DOMAIN, its MX on port 25 of every address
#   --dkim-key PEM   the gateway's DKIM key, a PEM file (default: an Ed25519 key generated once)
#   --rspamd         rspamd scores the gateway's inbound mail; spam goes to the account's Junk
#   --file PATH      write PATH instead of .env next to docker-compose.yml
set -eu

layout=single
extra=""
postgres=0
observability=0
tors=1
gateway=""
dkim_key=""
rspamd=0
file=$(dirname "$0")/../.env
while [ "$#" -gt 0 ]; do
  case "$1" in
    --distributed) layout=distributed ;;
    --postgres) postgres=1; extra="$extra,postgres" ;;
    --observability) observability=1; extra="$extra,observability" ;;
    --tors)
      [ "$#" -ge 2 ] || { echo "init-env: --tors needs a number" >&2; exit 2; }
      case "$2" in 1|2|3|4) tors=$2 ;; *) echo "init-env: --tors takes 1 to 4 (more: add tor services, or use the Helm chart's tor.replicas)" >&2; exit 2 ;; esac
      shift ;;
    --gateway)
      [ "$#" -ge 2 ] || { echo "init-env: --gateway needs a domain" >&2; exit 2; }
      case "$2" in
        *[!A-Za-z0-9.-]*|.*|*.|*..*|-*) echo "init-env: --gateway: $2 is not a domain name" >&2; exit 2 ;;
        *.*) gateway=$2 ;;
        *) echo "init-env: --gateway: $2 is not a domain name" >&2; exit 2 ;;
      esac
      shift ;;
    --dkim-key)
      [ "$#" -ge 2 ] || { echo "init-env: --dkim-key needs a PEM file" >&2; exit 2; }
      [ -r "$2" ] || { echo "init-env: --dkim-key: cannot read $2" >&2; exit 2; }
      # Absolute: compose reads host paths relative to the compose file, not to here.
      dkim_key=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
      shift ;;
    --rspamd) rspamd=1 ;;
    --file) [ "$#" -ge 2 ] || { echo "init-env: --file needs a path" >&2; exit 2; }; file=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "init-env: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -z "$gateway" ] && { [ "$rspamd" = 1 ] || [ -n "$dkim_key" ]; }; then
  echo "init-env: --rspamd and --dkim-key go with --gateway DOMAIN" >&2
  exit 2
fi
[ -z "$gateway" ] || extra="$extra,gateway"
[ "$rspamd" = 0 ] || extra="$extra,rspamd"

if [ -e "$file" ]; then
  echo "init-env: $file exists; it holds this carrier's secrets, so it is left alone (move it away to start afresh)" >&2
  exit 1
fi

# 32 random bytes as hex, from the kernel (no openssl needed).
random_hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# The pool: tor, tor-2 … tor-N (each its own compose profile) and their control ports.
control=tor:9051
index=2
while [ "$index" -le "$tors" ]; do
  extra="$extra,tor-$index"
  control="$control,tor-$index:9051"
  index=$((index + 1))
done

umask 077
{
  echo "# onionpost carrier settings for docker-compose.yml, written by deploy/init-env.sh."
  echo "# Keep this file private and backed up: ONIONPOST_SECRET seals every key and message."
  echo "COMPOSE_PROFILES=$layout$extra"
  echo "TOR_CONTROL_PASSWORD=$(random_hex)"
  echo "# Every tor of the pool (their profiles are in COMPOSE_PROFILES)."
  echo "TOR_CONTROL=$control"
  echo "ONIONPOST_SECRET=$(random_hex)"
  echo "# Operator token for the admin API (Authorization: Bearer …; onionpost admin reads it)."
  echo "ONIONPOST_ADMIN_TOKEN=opk_$(random_hex)"
  if [ "$postgres" = 1 ]; then
    password=$(random_hex)
    echo "POSTGRES_PASSWORD=$password"
    echo "ONIONPOST_DATABASE_URL=postgres://onionpost:$password@postgres:5432/onionpost"
  fi
  if [ "$observability" = 1 ]; then
    echo "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4317"
  fi
  echo "# Published on this address only; ports on the host."
  echo "PUBLISH_ADDRESS=127.0.0.1"
  echo "ADMIN_PORT=8080"
  echo "SUBMISSION_PORT=2587"
  echo "IMAP_PORT=2143"
  echo "PORTAL_PORT=8088"
  echo "# Who may sign up in the account portal: closed (the operator makes accounts), voucher or open."
  echo "PORTAL_SIGNUP=closed"
  if [ -n "$gateway" ]; then
    echo "# The clearnet gateway (profile gateway), in a container of its own. Its MX port faces the"
    echo "# internet; the DNS records its domain needs are logged at start:"
    echo "#   docker compose logs gateway | grep 'DNS record'"
    echo "GATEWAY_DOMAIN=$gateway"
    echo "GATEWAY_PUBLISH_ADDRESS=0.0.0.0"
    echo "GATEWAY_SMTP_PORT=25"
    echo "# Where the other services reach the gateway."
    echo "GATEWAY_REMOTE=http://gateway:50051"
    if [ "$layout" = single ]; then
      echo "# The single container runs every service but the gateway, and serves the gateway imap and keys."
      echo "SINGLE_TARGETS=onion,keys,smtp-in,queue,smtp-out,imap,portal,admin"
      echo "GATEWAY_REMOTE_IMAP=http://onionpost:50051"
      echo "GATEWAY_REMOTE_KEYS=http://onionpost:50051"
    fi
    echo "# The DKIM key: a PEM file on this host (RSA is verified by every receiver), and where the"
    echo "# gateway reads it (the file readable by uid 10001); both empty: an Ed25519 key generated"
    echo "# once into the gateway's volume."
    echo "GATEWAY_DKIM_KEY_FILE=$dkim_key"
    if [ -n "$dkim_key" ]; then
      echo "GATEWAY_DKIM_KEY=/run/secrets/gateway-dkim.pem"
    else
      echo "GATEWAY_DKIM_KEY="
    fi
    if [ "$rspamd" = 1 ]; then
      echo "# rspamd (profile rspamd) scores inbound clearnet mail; spam goes to the account's Junk."
      echo "GATEWAY_RSPAMD=rspamd:11333"
    fi
  fi
} >"$file"
echo "init-env: wrote $file (layout: $layout$extra); next: docker compose up -d" >&2
