#!/usr/bin/env bash
# Builds the grpc-go conformance server into OUT/server, offline, in GOPATH
# mode from Debian's packages (golang-go, golang-google-grpc-dev,
# golang-github-grpc-ecosystem-go-grpc-prometheus-dev, protobuf-compiler,
# protoc-gen-go, protoc-gen-go-grpc). The Go code for the services is
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
protoc -I "$proto" \
  --go_out="$src/revertname" --go_opt=paths=source_relative \
  --go_opt=Mrevert_name.proto=conformance/revertname \
  --go-grpc_out="$src/revertname" --go-grpc_opt=paths=source_relative \
  --go-grpc_opt=Mrevert_name.proto=conformance/revertname \
  revert_name.proto
protoc -I "$proto" \
  --go_out="$src/timeservice" --go_opt=paths=source_relative \
  --go_opt=Mtime.proto=conformance/timeservice \
  --go-grpc_out="$src/timeservice" --go-grpc_opt=paths=source_relative \
  --go-grpc_opt=Mtime.proto=conformance/timeservice \
  time.proto
cd "$src/server"
GO111MODULE=off GOPATH="$out/gopath:/usr/share/gocode" \
  GOCACHE="${GOCACHE:-$out/gocache}" GOPROXY=off \
  go build -o "$out/server" .
