package workloadcli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
)

// newJWTFetchCmd prints a JWT-SVID for the caller.
func newJWTFetchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fetch --audience A [--audience B ...] [--spiffe-id ID] [--token | --json]",
		Short: "Print a JWT-SVID for this process",
		Long: `Ask meshid's Workload API for a JWT-SVID for the given audiences and print
its SPIFFE ID, audience, expiry and the token. --token prints only the
token, for TOKEN=$(meshid jwt fetch --audience A --token).`,
		Example: `  meshid jwt fetch --audience payments
  TOKEN=$(meshid jwt fetch --audience payments --token)
  meshid jwt fetch --audience a --audience b --spiffe-id spiffe://example.org/web --json`,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	client := addClientFlags(cmd)
	var aud audiences
	cmd.Flags().Var(&aud, "audience", "`audience` of the token (repeat for several; required)")
	id := cmd.Flags().String("spiffe-id", "", "which of this process's identities to use (default: its first)")
	tokenOnly := cmd.Flags().Bool("token", false, "print only the token")
	asJSON := cli.JSONFlag(cmd, "the JWT-SVID")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if len(aud) == 0 {
			return cli.Usagef(cmd, "jwt fetch: -audience is required")
		}
		params := jwtsvid.Params{Audience: aud[0], ExtraAudiences: aud[1:]}
		if *id != "" {
			sid, err := spiffeid.FromString(*id)
			if err != nil {
				return fmt.Errorf("-spiffe-id %q: %w", *id, err)
			}
			params.Subject = sid
		}
		ctx, c, e, done, err := client.connect(cmd.Context())
		if err != nil {
			return err
		}
		defer done()
		svid, err := c.FetchJWTSVID(ctx, params)
		if err != nil {
			return e.Explain(err)
		}
		stdout := cmd.OutOrStdout()
		switch {
		case *tokenOnly:
			fmt.Fprintln(stdout, svid.Marshal())
		case *asJSON:
			return cli.WriteJSON(stdout, describeJWT(svid, time.Now(), true))
		default:
			printJWT(stdout, describeJWT(svid, time.Now(), true), time.Now())
		}
		return nil
	}
	return cmd
}

// newJWTValidateCmd asks meshid whether a token is a valid JWT-SVID for
// an audience.
func newJWTValidateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "validate TOKEN --audience A",
		Short: "Validate a JWT-SVID with meshid",
		Long: `Ask meshid's Workload API to validate TOKEN as a JWT-SVID for audience A
against the bundles meshid trusts, and print its subject, audience, expiry
and claims. Exits 1 with meshid's reason when the token is refused.`,
		Example: `  meshid jwt validate "$TOKEN" --audience payments
  meshid jwt validate --audience payments --json "$(cat /run/svid/jwt_svid.token)"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cli.Usagef(cmd, "jwt validate: want -audience A and exactly one TOKEN")
			}
			return nil
		},
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	client := addClientFlags(cmd)
	audience := cmd.Flags().String("audience", "", "the `audience` the token must carry (required)")
	asJSON := cli.JSONFlag(cmd, "the token's subject, audience, expiry and claims")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *audience == "" {
			return cli.Usagef(cmd, "jwt validate: want -audience A and exactly one TOKEN")
		}
		ctx, c, e, done, err := client.connect(cmd.Context())
		if err != nil {
			return err
		}
		defer done()
		svid, err := c.ValidateJWTSVID(ctx, strings.TrimSpace(args[0]), *audience)
		if err != nil {
			return e.Explain(err)
		}
		info := describeJWT(svid, time.Now(), false)
		if *asJSON {
			return cli.WriteJSON(cmd.OutOrStdout(), info)
		}
		fmt.Fprintln(cmd.OutOrStdout(), "valid")
		printJWT(cmd.OutOrStdout(), info, time.Now())
		return nil
	}
	return cmd
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
