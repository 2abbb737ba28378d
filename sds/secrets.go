package sds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// secretsFor builds the secrets named by names (all of them when names is
// empty): a SPIFFE ID is the caller's X509-SVID as a tls_certificate; a
// trust domain ID ("spiffe://example.org") is that bundle as a
// validation_context. Any other name fails the whole response.
func secretsFor(names []string, x *workloadapi.X509Context) ([]*anypb.Any, error) {
	if len(x.SVIDs) == 0 {
		return nil, errNoIdentity
	}
	var secrets []*tlsv3.Secret
	if len(names) == 0 {
		for _, svid := range x.SVIDs {
			names = append(names, svid.ID.String())
		}
		for _, b := range x.Bundles.Bundles() {
			names = append(names, b.TrustDomain().IDString())
		}
	}
	for _, name := range names {
		secret, err := secretNamed(name, x)
		if err != nil {
			return nil, err
		}
		secrets = append(secrets, secret)
	}

	out := make([]*anypb.Any, len(secrets))
	for i, s := range secrets {
		a, err := anypb.New(s)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "encode secret %q: %v", s.Name, err)
		}
		out[i] = a
	}
	return out, nil
}

func secretNamed(name string, x *workloadapi.X509Context) (*tlsv3.Secret, error) {
	for _, svid := range x.SVIDs {
		if svid.ID.String() != name {
			continue
		}
		certs, key, err := svid.Marshal()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "encode SVID %q: %v", name, err)
		}
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(certs),
			PrivateKey:       inline(key),
		}}}, nil
	}
	for _, b := range x.Bundles.Bundles() {
		if b.TrustDomain().IDString() != name {
			continue
		}
		roots, err := b.Marshal()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "encode bundle %q: %v", name, err)
		}
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(roots),
		}}}, nil
	}
	return nil, notEntitled(name)
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
