#!/usr/bin/env bash
# Refresh the molecular viewer the feature browser inlines (interplm_jax/report/vendor/):
# 3Dmol.js (BSD-3-Clause, https://3dmol.org) from the npm registry, its minified build and its
# licence files, unmodified. Usage: scripts/vendor_3dmol.sh [VERSION]   (default: the pinned one)
set -euo pipefail
VERSION="${1:-2.5.5}"
DEST="$(cd "$(dirname "$0")/.." && pwd)/interplm_jax/report/vendor"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "3dmol@${VERSION}" >/dev/null && tar xzf "3dmol-${VERSION}.tgz")
mkdir -p "$DEST"
for f in build/3Dmol-min.js build/3Dmol-min.js.LICENSE.txt LICENSE; do
  cp "$TMP/package/$f" "$DEST/$(basename "$f").tmp"
  mv "$DEST/$(basename "$f").tmp" "$DEST/$(basename "$f")"
done
mv "$DEST/LICENSE" "$DEST/3Dmol-LICENSE.txt"
printf '3dmol %s (npm), build/3Dmol-min.js sha256 %s\n' "$VERSION" \
  "$(sha256sum "$DEST/3Dmol-min.js" | cut -d' ' -f1)" > "$DEST/VERSION.txt"
echo "vendored $(cat "$DEST/VERSION.txt")"
