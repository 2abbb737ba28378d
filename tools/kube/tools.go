//go:build tools

// Package kube pins the kube-apiserver that the Kubernetes manifest test
// (deploy/kubernetes) starts. It is its own module so that Kubernetes never
// enters meshid's dependencies; mk/kube.mk builds the binary into .tools/.
package kube

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
