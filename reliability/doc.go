// Package reliability is meshid's reliability suite: each finding of issue
// 13 as a regression test, and the load, crash and bad-input scenarios that
// show meshid keeps serving, measured against a baseline taken in the same
// run. Every scenario starts the real meshid binary (and, where it matters,
// real Envoys and workloads under their own uids) through test/harness, is
// bounded in count and time, and uses only loopback and Unix sockets.
//
// The tests carry the build tag "reliability", so that `go test ./...` and
// `make test` leave them out: they load a 2-core machine for minutes and
// measure what they load. Run them with
//
//	make test-reliability
//	go test -tags reliability -race -count=1 -v -run TestName ./reliability/
//
// as root. docs/reliability.md lists the scenarios, what each proves and the
// figures measured.
package reliability
