package attestor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// K8sOptions configures k8s selectors.
type K8sOptions struct {
	// KubeletURL is the kubelet's base URL: https://HOST:10250 (with a
	// token and the kubelet's CA) or http://HOST:10255, the read-only port.
	KubeletURL string
	// TokenFile holds a bearer token for the kubelet, read on every call so
	// that a rotated token is picked up.
	TokenFile string
	// CAFile verifies the kubelet's serving certificate.
	CAFile string
	// ServerName is the name the kubelet's certificate must carry when it
	// is not KubeletURL's host: a kubelet's certificate names its node,
	// not the loopback address meshid reaches it on. Empty: the URL's host.
	ServerName string
	// Timeout bounds one call; zero means 2s.
	Timeout time.Duration
	// PodRetries are the pauses between pod list fetches while the
	// caller's pod or container is not listed yet (the kubelet lists a pod
	// some time after its containers start); nil means ten of 500ms.
	PodRetries []time.Duration
}

// k8sPlugin produces k8s:ns, k8s:sa, k8s:pod-label:K:V, k8s:pod-name,
// k8s:pod-uid, k8s:container-name, k8s:container-image and k8s:node-name
// for a process in a pod, from the kubelet's pod list.
type k8sPlugin struct {
	base      *url.URL
	tokenFile string
	client    *http.Client
	retries   []time.Duration
}

func newK8s(o K8sOptions) (*k8sPlugin, error) {
	base, err := url.Parse(o.KubeletURL)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, fmt.Errorf("k8s: kubelet_url %q: want https://HOST:PORT or http://HOST:PORT", o.KubeletURL)
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.PodRetries == nil {
		o.PodRetries = slices.Repeat([]time.Duration{500 * time.Millisecond}, 10)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("k8s: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("k8s: ca_file %s holds no PEM certificate", o.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	return &k8sPlugin{
		base:      base,
		tokenFile: o.TokenFile,
		client:    &http.Client{Timeout: o.Timeout, Transport: &http.Transport{TLSClientConfig: tlsConf, DisableKeepAlives: true}},
		retries:   o.PodRetries,
	}, nil
}

// podList is the part of the kubelet's /pods answer meshid reads.
type podList struct {
	Items []pod `json:"items"`
}

type pod struct {
	Metadata struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		UID       string            `json:"uid"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName string `json:"serviceAccountName"`
		NodeName           string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		ContainerStatuses          []containerStatus `json:"containerStatuses"`
		InitContainerStatuses      []containerStatus `json:"initContainerStatuses"`
		EphemeralContainerStatuses []containerStatus `json:"ephemeralContainerStatuses"`
	} `json:"status"`
}

type containerStatus struct {
	Name        string `json:"name"`
	Image       string `json:"image"`
	ContainerID string `json:"containerID"` // "containerd://ID", "docker://ID", "cri-o://ID"
}

var errNotListed = errors.New("not listed yet")

func (k *k8sPlugin) attest(ctx context.Context, p *Process) ([]Selector, error) {
	c, err := p.container()
	if err != nil {
		return nil, err
	}
	if c.PodUID == "" || c.ID == "" {
		return nil, nil // not in a pod
	}
	var sels []Selector
	err = retry(ctx, k.retries, func() (bool, error) {
		list, retryable, err := k.pods(ctx)
		if err != nil {
			return retryable, err
		}
		sels, err = podSelectors(list, c)
		return errors.Is(err, errNotListed), err
	})
	if err != nil {
		return nil, &Error{Reason: ReasonKubelet, Err: fmt.Errorf("pid %d in pod %s, container %.12s: %w", p.PID, c.PodUID, c.ID, err)}
	}
	return sels, nil
}

// podSelectors finds the caller's pod and container in the list.
func podSelectors(list podList, c container) ([]Selector, error) {
	for _, p := range list.Items {
		if p.Metadata.UID != c.PodUID {
			continue
		}
		statuses := slices.Concat(p.Status.ContainerStatuses, p.Status.InitContainerStatuses, p.Status.EphemeralContainerStatuses)
		i := slices.IndexFunc(statuses, func(s containerStatus) bool {
			_, id, ok := strings.Cut(s.ContainerID, "://")
			return ok && id == c.ID
		})
		if i < 0 {
			return nil, fmt.Errorf("pod %s/%s: container %w", p.Metadata.Namespace, p.Metadata.Name, errNotListed)
		}
		var sels []Selector
		sel := func(k, v string) {
			if v != "" {
				sels = append(sels, Selector{Type: "k8s", Value: k + ":" + v})
			}
		}
		sel("ns", p.Metadata.Namespace)
		sel("sa", p.Spec.ServiceAccountName)
		sel("pod-name", p.Metadata.Name)
		sel("pod-uid", p.Metadata.UID)
		sel("node-name", p.Spec.NodeName)
		for _, k := range sortedKeys(p.Metadata.Labels) {
			sel("pod-label", k+":"+p.Metadata.Labels[k])
		}
		sel("container-name", statuses[i].Name)
		sel("container-image", statuses[i].Image)
		return sels, nil
	}
	return nil, fmt.Errorf("pod %w", errNotListed)
}

// maxPodList bounds the kubelet's answer; a node runs at most a few
// hundred pods.
const maxPodList = 32 << 20

func (k *k8sPlugin) pods(ctx context.Context) (podList, bool, error) {
	var list podList
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.base.JoinPath("pods").String(), nil)
	if err != nil {
		return list, false, err
	}
	if k.tokenFile != "" {
		token, err := os.ReadFile(k.tokenFile)
		if err != nil {
			return list, false, fmt.Errorf("kubelet token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return list, true, fmt.Errorf("kubelet unreachable: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPodList))
	if err != nil {
		return list, true, fmt.Errorf("kubelet: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return list, resp.StatusCode >= 500, fmt.Errorf("kubelet %s: %s: %s", req.URL, resp.Status, truncate(string(body)))
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return list, false, fmt.Errorf("kubelet pod list: %w", err)
	}
	return list, false, nil
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
