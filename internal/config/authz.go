package config

import "time"

// Authz configures the ext_authz server.
type Authz struct {
	Address     string        `yaml:"address"`
	PolicyDir   string        `yaml:"policy_dir"`
	Decision    string        `yaml:"decision"`
	EvalTimeout time.Duration `yaml:"eval_timeout"`
}

func defaultAuthz() Authz {
	return Authz{
		Address:     "127.0.0.1:9191",
		PolicyDir:   "policies",
		Decision:    "data.envoy.authz.allow",
		EvalTimeout: 100 * time.Millisecond,
	}
}

// paths lists the file paths of the section, to be resolved against the
// config file's directory.
func (a *Authz) paths() []*string { return []*string{&a.PolicyDir} }

func (a Authz) validate(bad func(path []any, format string, args ...any)) {
	if err := checkHostPort(a.Address); err != nil {
		bad(at("authz", "address"), "authz.address: %v", err)
	}
	if a.PolicyDir == "" {
		bad(at("authz", "policy_dir"), "authz.policy_dir must not be empty")
	}
	if a.Decision == "" {
		bad(at("authz", "decision"), "authz.decision must not be empty")
	}
	if a.EvalTimeout <= 0 {
		bad(at("authz", "eval_timeout"), "authz.eval_timeout must be positive")
	}
}
