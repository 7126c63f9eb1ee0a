#!/bin/sh
# Builds Rill from a source tree into a self-contained runtime directory: the Dockerfile's build
# stage runs it, and so can anyone installing Rill on a host (the systemd unit runs it from
# /opt/rill). Run it from the repository root:
#
#   sh docs/deploy/docker/build.sh /opt/rill
#
# It installs the workspace, packs @rill/client and @rill/server as npm would publish them (each
# builds on prepack), then installs those two tarballs with their production dependencies only in
# OUT_DIR: OUT_DIR/node_modules/@rill/server/bin/rill.js is the `rill` command. Nothing else of the
# source tree is needed at run time.
set -eu

out="${1:?usage: sh docs/deploy/docker/build.sh OUT_DIR}"
[ -f package.json ] && [ -d packages/server ] || {
  echo "build.sh: run it from the Rill repository root" >&2
  exit 2
}
packs="$(mktemp -d)"
trap 'rm -rf "$packs"' EXIT

# Every workspace with its dev dependencies (TypeScript), exactly as package-lock.json says.
npm ci --no-audit --no-fund
npm pack --pack-destination "$packs" -w @rill/client -w @rill/server

mkdir -p "$out"
cd "$out"
# lmdb and msgpackr-extract ship prebuilt binaries: their install scripts are not needed.
cat > package.json <<'JSON'
{
  "name": "rill-runtime",
  "private": true,
  "allowScripts": { "lmdb": false, "msgpackr-extract": false }
}
JSON
npm install --omit=dev --no-audit --no-fund "$packs"/rill-client-*.tgz "$packs"/rill-server-*.tgz
node node_modules/@rill/server/bin/rill.js --version
