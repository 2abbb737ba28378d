package ca

import (
	"testing"

	"go.uber.org/goleak"
)

// Run is the package's only goroutine; none may outlive its test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
