#!/usr/bin/env bash
# Builds the grpc-go conformance server into OUT/server, offline, in GOPATH
# mode from Debian's packages (golang-go, golang-google-grpc-dev,
# golang-github-grpc-ecosystem-go-grpc-prometheus-dev, protobuf-compiler,
# protoc-gen-go-1-3). The Go code for the services is
# generated from the repository's .proto files.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto="$here/../../proto"
out="${1:?usage: build.sh OUT}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
src="$out/gopath/src/conformance"
rm -rf "$src"
mkdir -p "$src/server" "$src/revertname" "$src/timeservice"
cp "$here/main.go" "$src/server/"
# protoc-gen-go 1.3 with its grpc plugin: Debian's grpc-go 1.33 decodes
# messages through github.com/golang/protobuf 1.3, which reads only the
# code that version generates.
for p in revert_name:revertname time:timeservice; do
  file="${p%%:*}.proto" pkg="${p##*:}"
  protoc -I "$proto" \
    --go_out="plugins=grpc,paths=source_relative,M$file=conformance/$pkg:$src/$pkg" \
    "$file"
done
cd "$src/server"
GO111MODULE=off GOPATH="$out/gopath:/usr/share/gocode" \
  GOPROXY=off \
  go build -o "$out/server" .
