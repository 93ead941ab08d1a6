//go:build tools

// Package etcd pins the etcd server that the local test stack builds.
//
// The build tag keeps this file out of every build. It exists so that
// `go mod tidy` records the server's dependencies in go.mod and go.sum.
// The server's own go.mod points its sibling modules at ../api and the
// like, and Go ignores replace directives of dependencies, so requiring the
// published server module is enough here.
package etcd

import (
	_ "go.etcd.io/etcd/server/v3"
)
