//go:build tools

// Package kube pins the Kubernetes commands that the local test stack builds.
//
// The build tag keeps this file out of every build. It exists so that
// `go mod tidy` records the dependencies of the commands below in go.mod
// and go.sum, and `go build -o BIN k8s.io/kubernetes/cmd/NAME` then runs
// from this directory without network look-ups beyond the module proxy.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
