package vault

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// relogs says whether a refused token is worth a new login: one read
// from a file may have been replaced there, one from AppRole or
// Kubernetes expired. $VAULT_TOKEN cannot change.
func (c *Client) relogs() bool {
	return c.o.TokenFile != "" || c.o.AppRole != nil || c.o.Kubernetes != nil
}

// loginLocked makes sure c.token is one to use: read again or logged in
// again when force is set, when there is none, or when the one it has
// reaches two thirds of its lease. c.mu is held.
func (c *Client) loginLocked(ctx context.Context, force bool) error {
	if !force && c.token != "" && (c.expires.IsZero() || time.Now().Before(c.expires)) {
		return nil
	}
	switch {
	case c.o.TokenFile != "":
		t, err := readSecret("token_file", c.o.TokenFile)
		if err != nil {
			return err
		}
		c.token, c.expires = t, time.Time{}
		return nil
	case c.o.AppRole != nil:
		r := c.o.AppRole
		roleID, err := readSecret("approle.role_id_file", r.RoleIDFile)
		if err != nil {
			return err
		}
		secretID, err := readSecret("approle.secret_id_file", r.SecretIDFile)
		if err != nil {
			return err
		}
		return c.loginAt(ctx, r.Mount, map[string]any{"role_id": roleID, "secret_id": secretID})
	case c.o.Kubernetes != nil:
		k := c.o.Kubernetes
		jwt, err := readSecret("kubernetes.token_file", k.TokenFile)
		if err != nil {
			return err
		}
		return c.loginAt(ctx, k.Mount, map[string]any{"role": k.Role, "jwt": jwt})
	}
	return nil // $VAULT_TOKEN, set by New
}

// loginAt logs in to the auth method at mount and keeps the token it is
// given, to be renewed at two thirds of its lease by a new login.
func (c *Client) loginAt(ctx context.Context, mount string, data map[string]any) error {
	path := "auth/" + strings.Trim(mount, "/") + "/login"
	c.api.ClearToken()
	s, err := c.api.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return c.explain("login at PUT "+path, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return fmt.Errorf("%s: login at PUT %s: no token in the answer", c, path)
	}
	c.token, c.expires = s.Auth.ClientToken, time.Time{}
	if lease := time.Duration(s.Auth.LeaseDuration) * time.Second; lease > 0 {
		c.expires = time.Now().Add(lease * 2 / 3)
	}
	return nil
}

// readSecret reads a credential file, trimmed of surrounding space.
func readSecret(key, path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("ca.upstream.vault.%s: %w", key, err)
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("ca.upstream.vault.%s %s is empty", key, path)
	}
	return s, nil
}
