#!/usr/bin/env bash
# Regenerates src/bindings_generated.rs from libpg_query/pg_query.h with the
# bindgen version pg_query 18.1.0's build script used, with its defaults (the
# build script called bindgen::Builder::default().header(..).generate()).
# Needs libclang; run after replacing libpg_query/ with a new release, then
# commit the result. Install the tool once with:
#   cargo install bindgen-cli --version 0.66.1 --locked
set -euo pipefail
cd "$(dirname "$0")"
version="$(bindgen --version)"
if [ "$version" != "bindgen 0.66.1" ]; then
    echo "expected bindgen 0.66.1, found: $version" >&2
    exit 1
fi
bindgen libpg_query/pg_query.h -o src/bindings_generated.rs
