package main

import (
	"math/rand/v2"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshid/meshid/test/authztest"
)

// mixRequest is one request of a mix: what the demo policy (policies/envoy)
// decides for it, and how often it is sent relative to the others.
type mixRequest struct {
	req     *authv3.CheckRequest
	allowed bool
	weight  int
}

// meshMix is what the backend's sidecar asks about in a small mesh: the
// frontend's pods (several addresses) reading its greeting with a few
// query strings and clients, most of the traffic; the frontend also
// trying other paths and methods, and two other services calling, which
// the demo policy denies. 48 distinct requests, weighted so that a few
// of them are most of the calls, as in a mesh (the first pod's GET /hello
// from curl is 15% of them; 77% of the calls are allowed).
func meshMix() []mixRequest {
	var mix []mixRequest
	add := func(caller, pod, method, path, agent string, allowed bool, weight int) {
		r := authztest.DemoCheck(path)
		r.Attributes.Source.Principal = caller
		r.Attributes.Source.Address = authztest.SocketAddress(pod, 40112)
		h := r.Attributes.Request.Http
		h.Method, h.Headers[":method"], h.Headers["user-agent"] = method, method, agent
		mix = append(mix, mixRequest{req: r, allowed: allowed, weight: weight})
	}
	const frontend = authztest.Frontend
	pods := []string{"10.0.0.7", "10.0.0.17", "10.0.0.27"}
	for i, pod := range pods {
		for j, path := range []string{"/hello", "/hello?lang=fr", "/hello?lang=en", "/hello?lang=de&v=2"} {
			for k, agent := range []string{"curl/8.5.0", "python-requests/2.31"} {
				add(frontend, pod, "GET", path, agent, true, max(16>>(i+j+k), 1))
			}
		}
		add(frontend, pod, "POST", "/hello", "curl/8.5.0", false, 1)
		add(frontend, pod, "GET", "/hello/", "curl/8.5.0", false, 1)
		add(frontend, pod, "GET", "/admin", "curl/8.5.0", false, 1)
		add(frontend, pod, "GET", "/Hello", "curl/8.5.0", false, 1)
	}
	for _, caller := range []string{"spiffe://example.org/ns/demo/sa/batch", "spiffe://example.org/ns/demo/sa/metrics"} {
		for _, pod := range []string{"10.0.1.5", "10.0.1.6"} {
			for _, path := range []string{"/hello", "/metrics", "/hello?lang=fr"} {
				add(caller, pod, "GET", path, "Go-http-client/2.0", false, 1)
			}
		}
	}
	return mix
}

// schedule is the order one caller sends the mix in: each request as often
// as its weight, shuffled with the caller's own seed.
func schedule(mix []mixRequest, seed uint64) []int {
	var order []int
	for i, m := range mix {
		for range m.weight {
			order = append(order, i)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x6d657368))
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}
