package sds

import (
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshid/meshid/internal/echo"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// Names with a meaning of their own, as the SPIRE agent serves them.
const (
	nameDefault = "default" // the caller's first identity
	nameRootCA  = "ROOTCA"  // the caller's own trust bundle
	nameAll     = "ALL"     // every bundle the caller may use, for the SPIFFE validator

	spiffeValidatorName = "envoy.tls.cert_validator.spiffe"
	// disableSPIFFEValidation is the node metadata key with which an Envoy
	// asks for ALL as plain trusted_ca (SPIRE agent compatible).
	disableSPIFFEValidation = "disable_spiffe_cert_validation"
)

// maxResourceNames bounds one request. An Envoy asks for a handful; a
// request for thousands is a bug or an attack, and each name costs a lookup
// and possibly a PEM encoding on every push.
const maxResourceNames = 64

// maxNameLen bounds a resource name: no SPIFFE ID is longer (the SPIFFE-ID
// specification's limit) and the aliases are far shorter, so a longer name
// could never be served, and a delta stream would hold it until it ends.
const maxNameLen = 2048

// view is what one caller may be given at one moment: its SVIDs and the
// bundles it may use, and how it wants ALL delivered.
type view struct {
	x              *workloadapi.X509Context
	plainTrustedCA bool // ALL as trusted_ca instead of the SPIFFE validator
}

// errNoIdentity is what a caller no entry matches hears; meshid's log names
// the selectors it presented.
var errNoIdentity = status.Error(codes.PermissionDenied,
	"no identity issued: no meshid entry matches this process (meshid logs the selectors it presented; add an entry for them)")

func notEntitled(name string) error { return notEntitledError{name} }

// names lists what "everything the caller is entitled to" means: each of
// its SPIFFE IDs and each trust domain it may validate. The aliases
// (default, ROOTCA, ALL) are served only when asked for by name.
func (v view) names() []string {
	var names []string
	for _, svid := range v.x.SVIDs {
		names = append(names, svid.ID.String())
	}
	for _, b := range v.bundles() {
		names = append(names, b.TrustDomain().IDString())
	}
	return names
}

// secrets builds the named secrets; any name the caller is not entitled to
// fails them all, naming it.
func (v view) secrets(names []string) ([]*tlsv3.Secret, error) {
	if len(v.x.SVIDs) == 0 {
		return nil, errNoIdentity
	}
	if len(names) == 0 {
		names = v.names()
	}
	out := make([]*tlsv3.Secret, 0, len(names))
	for _, name := range names {
		s, err := v.secret(name)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// secret builds one named secret, or says the caller is not entitled to it.
func (v view) secret(name string) (*tlsv3.Secret, error) {
	if len(v.x.SVIDs) == 0 {
		return nil, errNoIdentity
	}
	switch name {
	case nameDefault:
		return tlsCertificate(name, v.x.SVIDs[0])
	case nameRootCA:
		own := v.x.SVIDs[0].ID.TrustDomain()
		b, err := v.x.Bundles.GetX509BundleForTrustDomain(own)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "resource %q: no bundle for %s yet", name, own)
		}
		return trustedCA(name, b)
	case nameAll:
		return v.all()
	}
	for _, svid := range v.x.SVIDs {
		if svid.ID.String() == name {
			return tlsCertificate(name, svid)
		}
	}
	for _, b := range v.bundles() {
		if b.TrustDomain().IDString() == name {
			return trustedCA(name, b)
		}
	}
	return nil, notEntitled(name)
}

// all is the ALL secret: every bundle in one SPIFFE certificate validator,
// which checks each peer against the bundle of the peer's own trust domain,
// or, when the Envoy asked for it, one trusted_ca with all the roots.
func (v view) all() (*tlsv3.Secret, error) {
	bundles := v.bundles()
	if v.plainTrustedCA {
		var roots []byte
		for _, b := range bundles {
			pem, err := b.Marshal()
			if err != nil {
				return nil, status.Errorf(codes.Internal, "encode bundle %s: %v", b.TrustDomain(), err)
			}
			roots = append(roots, pem...)
		}
		return validationContext(nameAll, &tlsv3.CertificateValidationContext{TrustedCa: inline(roots)}), nil
	}
	cfg := &tlsv3.SPIFFECertValidatorConfig{}
	for _, b := range bundles {
		pem, err := b.Marshal()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "encode bundle %s: %v", b.TrustDomain(), err)
		}
		cfg.TrustDomains = append(cfg.TrustDomains, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{
			Name:        b.TrustDomain().Name(),
			TrustBundle: inline(pem),
		})
	}
	typed, err := anypb.New(cfg)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode SPIFFE validator: %v", err)
	}
	return validationContext(nameAll, &tlsv3.CertificateValidationContext{
		CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: spiffeValidatorName, TypedConfig: typed},
	}), nil
}

// bundles returns the caller's bundles in a stable order (by trust
// domain), so equal content encodes equally.
func (v view) bundles() []*x509bundle.Bundle {
	bundles := v.x.Bundles.Bundles()
	slices.SortFunc(bundles, func(a, b *x509bundle.Bundle) int {
		return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})
	return bundles
}

func tlsCertificate(name string, svid *x509svid.SVID) (*tlsv3.Secret, error) {
	certs, key, err := svid.Marshal()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode SVID %s: %v", svid.ID, err)
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(certs),
		PrivateKey:       inline(key),
	}}}, nil
}

func trustedCA(name string, b *x509bundle.Bundle) (*tlsv3.Secret, error) {
	roots, err := b.Marshal()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode bundle %s: %v", b.TrustDomain(), err)
	}
	return validationContext(name, &tlsv3.CertificateValidationContext{TrustedCa: inline(roots)}), nil
}

func validationContext(name string, vc *tlsv3.CertificateValidationContext) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// wantsPlainTrustedCA reads the one piece of node metadata meshid honours:
// it changes only the encoding of ALL, never what the caller may have.
func wantsPlainTrustedCA(node *corev3.Node) bool {
	switch k := node.GetMetadata().GetFields()[disableSPIFFEValidation].GetKind().(type) {
	case *structpb.Value_BoolValue:
		return k.BoolValue
	case *structpb.Value_StringValue:
		return k.StringValue == "true"
	}
	return false
}

// checkNames validates the names of one request.
func checkNames(names []string) error {
	if len(names) > maxResourceNames {
		return status.Errorf(codes.InvalidArgument, "%d resource names requested; at most %d are served per stream", len(names), maxResourceNames)
	}
	for _, n := range names {
		if len(n) > maxNameLen {
			return status.Errorf(codes.InvalidArgument, "resource %s: longer than any SPIFFE ID (%d bytes)", echo.Quote(n, maxEcho), maxNameLen)
		}
	}
	return nil
}

// encode wraps secrets for a response.
func encode(secrets []*tlsv3.Secret) ([]*anypb.Any, error) {
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
