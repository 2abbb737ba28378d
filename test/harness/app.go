package harness

import (
	"context"
)

// App is a running demoapp.
type App struct {
	*Process
	Addr string // "IP:PORT": 127.0.0.1, or the host's address
	URL  string // "http://" + Addr
}

// StartApp runs demoapp under uid on a free port: a backend (echoes the
// caller's SPIFFE ID) when upstream is "", else a frontend whose
// GET /call/<rest> is forwarded to upstream + "/<rest>". It returns once
// /healthz answers.
func (e *Env) StartApp(ctx context.Context, name string, uid uint32, upstream string) (*App, error) {
	return e.startApp(ctx, nil, name, uid, upstream)
}

// StartApp runs demoapp on the host as Env.StartApp does, listening on the
// host's address.
func (h *Host) StartApp(ctx context.Context, name string, uid uint32, upstream string) (*App, error) {
	return h.env.startApp(ctx, h, name, uid, upstream)
}

func (e *Env) startApp(ctx context.Context, h *Host, name string, uid uint32, upstream string) (*App, error) {
	bin, err := e.Binary("demoapp")
	if err != nil {
		return nil, err
	}
	addr := e.FreeAddr()
	if h != nil {
		addr = h.FreeAddr()
	}
	args := []string{"-name", name, "-listen", addr}
	if upstream != "" {
		args = append(args, "-upstream", upstream)
	}
	p, err := e.Start(ctx, ProcSpec{Name: name, Path: bin, Args: args, UID: uid, Host: h})
	if err != nil {
		return nil, err
	}
	a := &App{Process: p, Addr: addr, URL: "http://" + addr}
	if err := e.waitReady(ctx, p, a.URL+"/healthz", 200); err != nil {
		return nil, err
	}
	return a, nil
}
