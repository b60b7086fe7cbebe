#!/usr/bin/env bash
# `npm run image [-- --output FILE] [--tag TAG]`: the upload host's container image (README,
# Deploy), built with buildah from scratch, nothing from Docker Hub:
#
#   /app/main.js, /app/sha256-thread.js   esbuild bundles of lib/local/main.ts and the hashing
#                                         worker it starts (new URL('./sha256-thread.js', ...))
#   /usr/local/bin/node                   Node 22 from npm's node-linux-<arch> package (pinned)
#   /lib*, /usr/lib*                      the shared libraries that binary links against (ldd)
#   /tmp                                  empty, world-writable (sticky)
#
# run as user 65532 (no shell, no package manager, nothing else in the image), port 8080,
# CMD node <npm start's Node flags> /app/main.js with SKIFF_SERVE=uploads and npm start's
# GLIBC_TUNABLES. The image is for
# this machine's architecture (ldd needs to run the binary's loader): build on x86_64 for
# Fargate's default platform.
# Docker format (not OCI) because that is what ECS documents for Fargate.
#
# The image lands in buildah's storage as localhost/skiff-upload-host:<tag>; --output also
# writes it as a docker-archive. Push it with skopeo (README, Deploy).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NODE_VERSION="${SKIFF_IMAGE_NODE_VERSION:-22.23.5}"
TAG="$(node -p "require('$ROOT/package.json').version")"
# The malloc settings `npm start` runs the registry with (package.json's config; README, Benchmark).
MALLOC_TUNABLES="$(node -p "require('$ROOT/package.json').config.glibcTunables")"
# ... and the Node flags it starts it with, as the image's command: ["/usr/local/bin/node", <flags>, "/app/main.js"].
CMD_JSON="$(node -p "JSON.stringify(['/usr/local/bin/node', ...require('$ROOT/package.json').config.nodeFlags.split(' ').filter(Boolean), '/app/main.js'])")"
OUTPUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --output) OUTPUT="$(realpath -m "$2")"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    *) echo "image: unknown argument $1 (use --output FILE, --tag TAG)" >&2; exit 2 ;;
  esac
done
IMAGE="localhost/skiff-upload-host:$TAG"

case "$(uname -m)" in
  x86_64) NODE_ARCH=x64; OCI_ARCH=amd64 ;;
  aarch64) NODE_ARCH=arm64; OCI_ARCH=arm64 ;;
  *) echo "image: no Node package for $(uname -m)" >&2; exit 1 ;;
esac
for tool in buildah npm ldd; do
  command -v "$tool" >/dev/null || { echo "image: $tool is needed (apt-get install buildah)" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/skiff-image-XXXXXX")"
CONTAINER=""
cleanup() {
  [ -n "$CONTAINER" ] && buildah rm "$CONTAINER" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS/app" "$ROOTFS/usr/local/bin" "$ROOTFS/etc" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"

echo "image: bundling lib/local/main.ts" >&2
# ES modules like the Lambda bundles; the banner gives bundled CommonJS code its require. The
# embedded DynamoDB Local is never started in the image (DYNAMODB_ENDPOINT is always set there),
# and lib/ only resolves its jar when starting it, so nothing of it is bundled.
"$ROOT/node_modules/.bin/esbuild" "$ROOT/lib/local/main.ts" "$ROOT/lib/hash/sha256-thread.ts" \
  --bundle --platform=node --target=node22 --format=esm --minify --legal-comments=none \
  --main-fields=module,main --outdir="$ROOTFS/app" --entry-names='[name]' --out-extension:.js=.js \
  --banner:js="import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" \
  --log-level=warning
echo '{"type":"module"}' >"$ROOTFS/app/package.json"

echo "image: node-linux-$NODE_ARCH@$NODE_VERSION from npm" >&2
(cd "$WORK" && npm pack --silent "node-linux-$NODE_ARCH@$NODE_VERSION" >/dev/null && tar -xzf node-linux-*.tgz)
cp "$WORK/package/bin/node" "$ROOTFS/usr/local/bin/node"
[ "$("$ROOTFS/usr/local/bin/node" --version)" = "v$NODE_VERSION" ] || { echo "image: the node binary is not v$NODE_VERSION" >&2; exit 1; }

echo "image: the libraries node links against" >&2
# `ldd` lines: "libx.so.6 => /lib/.../libx.so.6 (0x...)" and the loader "/lib64/ld-linux-x86-64.so.2 (0x...)".
# Each is copied (symlinks resolved) to the path the loader will look for.
ldd "$ROOTFS/usr/local/bin/node" | awk '/=> \// { print $3 } /^[ \t]*\// { print $1 }' | while read -r lib; do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
done
printf 'root:x:0:0::/nonexistent:/sbin/nologin\nskiff:x:65532:65532::/nonexistent:/sbin/nologin\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nskiff:x:65532:\n' >"$ROOTFS/etc/group"

echo "image: buildah from scratch -> $IMAGE" >&2
CONTAINER="$(buildah from scratch)"
buildah copy --quiet "$CONTAINER" "$ROOTFS" / >/dev/null
buildah config \
  --arch "$OCI_ARCH" --os linux \
  --user 65532:65532 --workingdir /app --port 8080/tcp \
  --env SKIFF_SERVE=uploads --env SKIFF_HOST=0.0.0.0 --env SKIFF_PORT=8080 --env NODE_ENV=production \
  --env "GLIBC_TUNABLES=$MALLOC_TUNABLES" \
  --cmd "$CMD_JSON" --entrypoint '[]' \
  --label org.opencontainers.image.title=skiff-upload-host \
  --label "org.opencontainers.image.version=$TAG" \
  "$CONTAINER"
buildah commit --quiet --format docker --rm "$CONTAINER" "$IMAGE" >/dev/null
CONTAINER=""
if [ -n "$OUTPUT" ]; then
  rm -f "$OUTPUT"
  buildah push --quiet --format docker "$IMAGE" "docker-archive:$OUTPUT:$IMAGE" >/dev/null
fi
echo "image: $IMAGE${OUTPUT:+ (and $OUTPUT)}; push: skopeo copy containers-storage:$IMAGE docker://<repository>:$TAG" >&2
echo "$IMAGE"
