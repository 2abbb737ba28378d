package node

import (
	"slices"
	"testing"
	"time"

	"github.com/meshid/meshid/internal/config"
)

// TestLintOptions: entries are linted against the selector types the
// daemon would attest with the same config.
func TestLintOptions(t *testing.T) {
	for _, tt := range []struct {
		name  string
		set   func(*config.Config)
		types []string
	}{
		{"unix only", nil, []string{"unix"}},
		{"docker", func(c *config.Config) { c.Docker = &config.Docker{} }, []string{"unix", "docker"}},
		{"k8s", func(c *config.Config) { c.K8s = &config.K8s{} }, []string{"unix", "k8s"}},
		{"both", func(c *config.Config) { c.Docker, c.K8s = &config.Docker{}, &config.K8s{} }, []string{"unix", "docker", "k8s"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.TrustDomain, cfg.CA.TTL = "corp.example", 48*time.Hour
			if tt.set != nil {
				tt.set(&cfg)
			}
			o, err := LintOptions(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if o.TrustDomain.Name() != "corp.example" || o.CATTL != 48*time.Hour || !slices.Equal(o.Types, tt.types) {
				t.Fatalf("%+v, want corp.example, 48h, %v", o, tt.types)
			}
		})
	}
	cfg := config.Default()
	cfg.TrustDomain = "not a trust domain"
	if _, err := LintOptions(cfg); err == nil {
		t.Error("a bad trust domain gave lint options")
	}
}
