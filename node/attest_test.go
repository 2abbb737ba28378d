package node

import (
	"strings"
	"testing"

	"github.com/meshid/meshid/internal/config"
)

func TestNewAttestorReadsTheKubeletServerName(t *testing.T) {
	cfg := config.Default()
	cfg.K8s = &config.K8s{KubeletURL: "https://127.0.0.1:10250", KubeletServerNameEnv: "MESHID_TEST_NODE_NAME"}
	t.Setenv("MESHID_TEST_NODE_NAME", "")
	_, err := newAttestor(cfg)
	if err == nil || !strings.Contains(err.Error(), "$MESHID_TEST_NODE_NAME is empty or unset") {
		t.Fatalf("newAttestor without the variable = %v, want it named", err)
	}
	t.Setenv("MESHID_TEST_NODE_NAME", "node-1")
	if _, err := newAttestor(cfg); err != nil {
		t.Fatalf("newAttestor with the variable: %v", err)
	}
}
