// Command etcd is a single-member etcd for tests: the kube-apiserver that
// the Kubernetes manifest test starts keeps its objects in it. It is
// go.etcd.io/etcd/server/v3's embed package behind three flags, in a module
// of its own so that etcd never enters meshid's dependencies; mk/kube.mk
// builds it into .tools/.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dir := flag.String("data-dir", "", "where etcd keeps its data (required)")
	client := flag.String("listen-client", "http://127.0.0.1:2379", "client URL")
	peer := flag.String("listen-peer", "http://127.0.0.1:2380", "peer URL (a single member still needs one)")
	flag.Parse()
	if *dir == "" {
		log.Fatal("etcd: -data-dir is required")
	}
	cfg := embed.NewConfig()
	cfg.Name = "meshid-test"
	cfg.Dir = *dir
	cfg.LogLevel = "warn"
	for _, u := range []struct {
		flag string
		raw  string
		set  *[]url.URL
		adv  *[]url.URL
	}{
		{"-listen-client", *client, &cfg.ListenClientUrls, &cfg.AdvertiseClientUrls},
		{"-listen-peer", *peer, &cfg.ListenPeerUrls, &cfg.AdvertisePeerUrls},
	} {
		parsed, err := url.Parse(u.raw)
		if err != nil || parsed.Host == "" {
			log.Fatalf("etcd: %s %q: want http://IP:PORT", u.flag, u.raw)
		}
		*u.set, *u.adv = []url.URL{*parsed}, []url.URL{*parsed}
	}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd ready, clients at %s\n", *client)
	case <-time.After(time.Minute):
		e.Server.Stop()
		log.Fatal("etcd: not ready after a minute")
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stop:
	case err := <-e.Err():
		log.Printf("etcd: %v", err)
	}
	e.Close()
}
