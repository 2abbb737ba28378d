package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// audiences is a repeatable -audience flag.
type audiences []string

func (a *audiences) String() string { return strings.Join(*a, ",") }
func (a *audiences) Set(v string) error {
	if v == "" {
		return errors.New("empty audience")
	}
	*a = append(*a, v)
	return nil
}

// jwtFetch prints a JWT-SVID for the caller.
func jwtFetch(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("jwt fetch", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, `Usage: meshid jwt fetch -audience A [-audience B ...] [-spiffe-id ID] [-token | -json]

Asks meshid's Workload API for a JWT-SVID for the given audiences and prints
its SPIFFE ID, audience, expiry and the token. -token prints only the token,
for TOKEN=$(meshid jwt fetch -audience A -token).

`)
		flags.PrintDefaults()
	}
	ep := addEndpointFlags(flags)
	var aud audiences
	flags.Var(&aud, "audience", "audience of the token (repeat for several; required)")
	id := flags.String("spiffe-id", "", "which of this process's identities to use (default: its first)")
	tokenOnly := flags.Bool("token", false, "print only the token")
	asJSON := flags.Bool("json", false, "print JSON")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if len(aud) == 0 {
		flags.Usage()
		return errors.New("jwt fetch: -audience is required")
	}
	if flags.NArg() > 0 {
		flags.Usage()
		return fmt.Errorf("jwt fetch: unexpected argument %q", flags.Arg(0))
	}
	params := jwtsvid.Params{Audience: aud[0], ExtraAudiences: aud[1:]}
	if *id != "" {
		sid, err := spiffeid.FromString(*id)
		if err != nil {
			return fmt.Errorf("-spiffe-id %q: %w", *id, err)
		}
		params.Subject = sid
	}
	ctx, c, e, done, err := ep.connect()
	if err != nil {
		return err
	}
	defer done()
	svid, err := c.FetchJWTSVID(ctx, params)
	if err != nil {
		return e.Explain(err)
	}
	switch {
	case *tokenOnly:
		fmt.Fprintln(stdout, svid.Marshal())
	case *asJSON:
		return writeJSON(stdout, describeJWT(svid, time.Now(), true))
	default:
		printJWT(stdout, describeJWT(svid, time.Now(), true), time.Now())
	}
	return nil
}

// jwtValidate asks meshid whether a token is a valid JWT-SVID for an
// audience.
func jwtValidate(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("jwt validate", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, `Usage: meshid jwt validate -audience A [-json] TOKEN

Asks meshid's Workload API to validate TOKEN as a JWT-SVID for audience A
against the bundles meshid trusts, and prints its subject, audience, expiry
and claims. Exits 1 with meshid's reason when the token is refused.

`)
		flags.PrintDefaults()
	}
	ep := addEndpointFlags(flags)
	audience := flags.String("audience", "", "the audience the token must carry (required)")
	asJSON := flags.Bool("json", false, "print JSON")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *audience == "" || flags.NArg() != 1 {
		flags.Usage()
		return errors.New("jwt validate: want -audience A and exactly one TOKEN")
	}
	ctx, c, e, done, err := ep.connect()
	if err != nil {
		return err
	}
	defer done()
	svid, err := c.ValidateJWTSVID(ctx, strings.TrimSpace(flags.Arg(0)), *audience)
	if err != nil {
		return e.Explain(err)
	}
	info := describeJWT(svid, time.Now(), false)
	if *asJSON {
		return writeJSON(stdout, info)
	}
	fmt.Fprintln(stdout, "valid")
	printJWT(stdout, info, time.Now())
	return nil
}

type jwtInfo struct {
	SPIFFEID  string         `json:"spiffe_id"`
	Audience  []string       `json:"audience"`
	ExpiresAt time.Time      `json:"expires_at"`
	ExpiresIn int64          `json:"expires_in_seconds"`
	Hint      string         `json:"hint,omitempty"`
	Claims    map[string]any `json:"claims,omitempty"`
	Token     string         `json:"token,omitempty"`
}

func describeJWT(s *jwtsvid.SVID, now time.Time, withToken bool) jwtInfo {
	info := jwtInfo{
		SPIFFEID:  s.ID.String(),
		Audience:  s.Audience,
		ExpiresAt: s.Expiry.UTC(),
		ExpiresIn: int64(s.Expiry.Sub(now) / time.Second),
		Hint:      s.Hint,
		Claims:    s.Claims,
	}
	if withToken {
		info.Token = s.Marshal()
	}
	return info
}

func printJWT(w io.Writer, j jwtInfo, now time.Time) {
	fmt.Fprintf(w, "SPIFFE ID  %s\n", j.SPIFFEID)
	fmt.Fprintf(w, "Audience   %s\n", strings.Join(j.Audience, ", "))
	fmt.Fprintf(w, "Expires    %s (%s)\n", relTime(j.ExpiresAt, now), j.ExpiresAt.Format(time.RFC3339))
	if j.Token != "" {
		fmt.Fprintf(w, "Token      %s\n", j.Token)
	}
}
