package node

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/internal/config"
)

// newAttestor builds the attestor the config asks for: unix always, docker
// and k8s when their sections are present.
func newAttestor(cfg config.Config) (*attestor.Attestor, error) {
	o := attestor.Options{SHA256: cfg.Unix.SHA256}
	if d := cfg.Docker; d != nil {
		do := dockerOptions(*d)
		o.Docker = &do
	}
	if k := cfg.K8s; k != nil {
		var serverName string
		if env := k.KubeletServerNameEnv; env != "" {
			if serverName = os.Getenv(env); serverName == "" {
				return nil, fmt.Errorf("k8s.kubelet_server_name_env: $%s is empty or unset; set it to the node's name (in a DaemonSet, from spec.nodeName)", env)
			}
		}
		// Ask the kubelet every half second until the pod lookup timeout.
		const pause = 500 * time.Millisecond
		o.K8s = &attestor.K8sOptions{
			KubeletURL: k.KubeletURL,
			TokenFile:  k.TokenFile,
			CAFile:     k.CAFile,
			ServerName: serverName,
			Timeout:    k.Timeout,
			PodRetries: slices.Repeat([]time.Duration{pause}, max(1, int(k.PodLookupTimeout/pause))),
		}
	}
	return attestor.New(o)
}

func dockerOptions(d config.Docker) attestor.DockerOptions {
	return attestor.DockerOptions{SocketPath: d.SocketPath, Timeout: d.Timeout}
}
