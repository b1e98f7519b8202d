#!/bin/sh
# Makes the credentials of the compose cluster (deploy/compose.yaml):
#   deploy/secrets/<name>.token   one clear token per credential (mounted as compose secrets)
#   deploy/generated/edge-<id>.toml   config/edge-<id>.toml plus the digests of the other edges' peer
#                                     credentials (an edge never holds another edge's clear peer token)
# Run it once before `docker compose up`; running it again replaces every credential (restart everything then).
# Needs only sh and python3.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
secrets="$here/secrets"
generated="$here/generated"
edges="eu us apac"
names="edge-eu edge-us edge-apac peer-eu peer-us peer-apac replica admin metrics game-server grafana-admin"

umask 077
mkdir -p "$secrets" "$generated"

for name in $names; do
  python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$secrets/$name.token"
  # Compose (without swarm) bind-mounts secret files as they are: the container user (uid 10001) must read
  # them. The directory stays 0700, so on the host only its owner can.
  chmod 0644 "$secrets/$name.token"
done

digest() {
  python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1]).read().strip().encode()).hexdigest())' \
    "$secrets/$1.token"
}

for id in $edges; do
  out="$generated/edge-$id.toml"
  cp "$here/config/edge-$id.toml" "$out"
  for peer in $edges; do
    [ "$peer" = "$id" ] && continue
    printf '\n[[tokens]]\nname = "%s"  # %s'"'"'s own peer credential: it may sync only as "%s"\nrole = "peer"\nsha256 = "%s"\n' \
      "$peer" "$peer" "$peer" "$(digest "peer-$peer")" >> "$out"
  done
  chmod 0644 "$out"
done
echo "credentials in $secrets, edge configs in $generated"
