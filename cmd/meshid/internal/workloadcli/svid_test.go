package workloadcli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/test/svidtest"
)

func TestSVIDReport(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	fresh := ca.SVID(t, "/ns/demo/sa/app", now.Add(-10*time.Second), now.Add(30*time.Second))
	old := ca.SVID(t, "/ns/demo/sa/old", now.Add(-40*time.Second), now.Add(5*time.Second))
	c := ca.X509Context(fresh, old)
	r := svidReport{Bundles: bundleInfos(c.Bundles)}
	for _, s := range c.SVIDs {
		r.SVIDs = append(r.SVIDs, describeSVID(s, now))
	}

	var human bytes.Buffer
	printSVIDReport(&human, r, now)
	for _, want := range []string{
		"SPIFFE ID  spiffe://example.org/ns/demo/sa/app\n",
		"Expires    in 30s (2026-11-23T12:00:30Z)\n",
		"Chain      1 certificate(s)\n",
		"  leaf  spiffe://example.org/ns/demo/sa/app  issuer \"CN=root,O=meshid test\"",
		"Expires    in 5s (2026-11-23T12:00:05Z)  WARNING: past 3/4 of its life and not renewed\n",
		"Bundle     example.org: 1 root(s)\n",
	} {
		if !strings.Contains(human.String(), want) {
			t.Errorf("human output lacks %q:\n%s", want, human.String())
		}
	}

	var js bytes.Buffer
	if err := cli.WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	var back struct {
		SVIDs []struct {
			SPIFFEID  string `json:"spiffe_id"`
			ExpiresIn int64  `json:"expires_in_seconds"`
			Past      bool   `json:"past_renewal"`
			Chain     []struct {
				URIs []string `json:"uri_sans"`
			} `json:"chain"`
		} `json:"svids"`
		Bundles []struct {
			TrustDomain string `json:"trust_domain"`
		} `json:"bundles"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.SVIDs) != 2 || back.SVIDs[0].SPIFFEID != "spiffe://example.org/ns/demo/sa/app" ||
		back.SVIDs[0].ExpiresIn != 30 || back.SVIDs[0].Past || !back.SVIDs[1].Past ||
		back.SVIDs[0].Chain[0].URIs[0] != back.SVIDs[0].SPIFFEID || back.Bundles[0].TrustDomain != "example.org" {
		t.Fatalf("JSON %s", js.String())
	}
}

func TestRelTime(t *testing.T) {
	now := time.Now()
	for d, want := range map[time.Duration]string{
		29*time.Second + 400*time.Millisecond: "in 29s",
		-3 * time.Second:                      "3s ago",
		time.Hour + time.Minute:               "in 1h1m0s",
		100 * time.Millisecond:                "now",
	} {
		if got := relTime(now.Add(d), now); got != want {
			t.Errorf("relTime(%v) = %q, want %q", d, got, want)
		}
	}
}
