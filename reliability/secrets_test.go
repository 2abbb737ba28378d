//go:build reliability

package reliability

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// fetchSecrets asks meshid's SDS for names once, from this process (root,
// which loadEntries gives loadID), on a connection of its own.
func fetchSecrets(ctx context.Context, socket string, names ...string) (*discoveryv3.DiscoveryResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx,
		&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: names})
}

// secrets are the certificates of an SDS response: the leaf of each
// tls_certificate, and every root of each validation context.
type secrets struct {
	svids, roots []*x509.Certificate
}

func parseSecrets(resp *discoveryv3.DiscoveryResponse) (secrets, error) {
	var s secrets
	for _, any := range resp.GetResources() {
		var sec tlsv3.Secret
		if err := any.UnmarshalTo(&sec); err != nil {
			return s, err
		}
		if tc := sec.GetTlsCertificate(); tc != nil {
			chain, err := parsePEM(tc.GetCertificateChain().GetInlineBytes())
			if err != nil || len(chain) == 0 {
				return s, fmt.Errorf("secret %s: chain: %v", sec.Name, err)
			}
			s.svids = append(s.svids, chain[0])
		}
		if vc := sec.GetValidationContext(); vc != nil {
			roots, err := parsePEM(vc.GetTrustedCa().GetInlineBytes())
			if err != nil {
				return s, fmt.Errorf("secret %s: trusted_ca: %w", sec.Name, err)
			}
			s.roots = append(s.roots, roots...)
		}
	}
	return s, nil
}

func parsePEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			return certs, nil
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
}
