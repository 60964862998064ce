package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/config"
)

// revokeCmd revokes a profile's current key upstream and has the running
// daemon mint a new one, for incident response; --all-cached does it for
// every profile that holds a key. It prints what was revoked and the new
// key, and fails when any revocation or re-mint failed.
//
// Without --token-file the daemon revokes with the profile's own
// credential (POST /v1/profiles/{profile}/revoke, empty body, admin token).
// With it, the API token never goes to the daemon: this command reads the
// key id the daemon serves (GET /v1/profiles), revokes that key upstream
// itself, then tells the daemon ({"revokedAccessKeyId"}) to stop serving it
// and mint a new one.
func revokeCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("revoke", flag.ContinueOnError)
	profile := fs.String("profile", "", "profile whose current key to revoke")
	all := fs.Bool("all-cached", false, "revoke the current key of every profile that holds one")
	addr := fs.String("addr", "", "daemon host:port (default: CWCREDS_LISTEN_ADDR, else 127.0.0.1:791)")
	adminFile := fs.String("admin-token-file", "", "the daemon's admin token file (default: "+adminTokenName+" in the daemon's runtime directory)")
	tokenFile := fs.String("token-file", "", "file holding a CoreWeave API access token to revoke with, which this command uses itself "+
		"(it is never sent to the daemon); required for oidc and saml profiles, which hold none "+
		"(default: the daemon revokes with the profile's own upstream token, for access-key and api-token)")
	apiURL := fs.String("api-url", "", "CoreWeave API base URL for --token-file (default: CWCREDS_API_URL, else https://api.coreweave.com)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if (*profile == "") == !*all {
		fs.Usage()
		return &usageError{errors.New("revoke: give exactly one of --profile NAME and --all-cached")}
	}
	l, err := config.LoadLocal(environ)
	if err != nil {
		return &usageError{fmt.Errorf("revoke: %w", err)}
	}
	if *adminFile == "" {
		*adminFile = adminTokenPath(l.RuntimeDir)
	}
	if *apiURL == "" {
		*apiURL = l.APIURL
	}
	admin, err := readAdminToken(*adminFile)
	if err != nil {
		return err
	}
	var apiToken string
	if *tokenFile != "" {
		if apiToken, err = cwapi.ReadTokenFileWith(*tokenFile, cwapi.TokenFileRules{
			AllowInsecureMode: insecureModesAllowed(environ), CredentialsDir: lookupEnv(environ, "CREDENTIALS_DIRECTORY")}); err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
	}
	d, err := newDaemonClient("revoke", *addr, *adminFile, environ)
	if err != nil {
		return err
	}

	var upstream *cwapi.Client
	if apiToken != "" {
		if upstream, err = cwapi.NewClient(*apiURL, func(o *cwapi.ClientOptions) { o.UserAgent = "cwcreds/" + buildVersion() }); err != nil {
			return &usageError{fmt.Errorf("revoke: --api-url: %w", err)}
		}
	}

	held, err := cachedProfiles(ctx, d)
	if err != nil {
		return err
	}
	names := []string{*profile}
	if *all {
		names = slices.Sorted(maps.Keys(held))
		if len(names) == 0 {
			fmt.Fprintln(stdout, "No profile holds a key: nothing to revoke.")
			return nil
		}
	}
	var failed []string
	for _, name := range names {
		var rev *broker.Revocation
		if upstream == nil {
			rev, err = d.revoke(ctx, name, admin, "")
		} else {
			rev, err = revokeUpstream(ctx, d, upstream, name, held[name], admin, apiToken)
		}
		if err != nil {
			fmt.Fprintf(stdout, "%s: NOT revoked: %v\n", name, err)
			if de := (*daemonError)(nil); errors.As(err, &de) && de.Code == "RevokeTokenRequired" {
				fmt.Fprintf(stdout, "%s: its source holds no API access token; pass --token-file with a CoreWeave API access token allowed to revoke keys\n", name)
			}
			failed = append(failed, name)
			continue
		}
		printRevocation(stdout, rev, time.Now())
		if rev.NewAccessKeyID == "" && !rev.NotHeld {
			failed = append(failed, name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("revoke failed or left no new key for: %s", strings.Join(failed, ", "))
	}
	return nil
}

func printRevocation(w io.Writer, rev *broker.Revocation, now time.Time) {
	gone := ""
	if rev.AlreadyGone {
		gone = " (upstream no longer knew it)"
	}
	fmt.Fprintf(w, "%s: revoked key %s upstream%s; it is no longer served\n", rev.Profile, rev.RevokedAccessKeyID, gone)
	if rev.NotHeld {
		fmt.Fprintf(w, "%s: the daemon had already replaced it; it serves another key\n", rev.Profile)
		return
	}
	if rev.NewAccessKeyID != "" {
		fmt.Fprintf(w, "%s: now serving new key %s, expires %s (in %s)\n", rev.Profile, rev.NewAccessKeyID,
			rev.NewExpiration.UTC().Format(time.RFC3339), expiresIn(now, rev.NewExpiration))
		return
	}
	fmt.Fprintf(w, "%s: minting a new key FAILED: %s\n%s: clients get 503 until a mint succeeds; the daemon retries with backoff\n",
		rev.Profile, rev.MintError, rev.Profile)
}

// revokeUpstream revokes the key id the daemon serves for profile upstream
// with apiToken, then has the daemon drop it and mint a new one. The token
// goes to the CoreWeave API only, never to the daemon.
func revokeUpstream(ctx context.Context, d *daemonClient, upstream *cwapi.Client, profile, keyID, admin, apiToken string) (*broker.Revocation, error) {
	if keyID == "" {
		return nil, fmt.Errorf("the daemon holds no key for profile %q (unknown profile, or none minted yet): nothing to revoke", profile)
	}
	rctx, cancel := context.WithTimeout(ctx, broker.MintTimeout)
	err := upstream.RevokeAccessKey(rctx, apiToken, keyID)
	cancel()
	var api *cwapi.APIError
	gone := errors.As(err, &api) && api.StatusCode == http.StatusNotFound
	if err != nil && !gone {
		return nil, fmt.Errorf("revoking key %s upstream: %w; the daemon still serves it", keyID, err)
	}
	rev, err := d.revoke(ctx, profile, admin, keyID)
	if err != nil {
		return nil, fmt.Errorf("key %s is revoked upstream, but the daemon did not replace it: %w (run revoke again)", keyID, err)
	}
	rev.AlreadyGone = rev.AlreadyGone || gone
	return rev, nil
}

// cachedProfiles returns the key id each profile that holds a key serves.
func cachedProfiles(ctx context.Context, d *daemonClient) (map[string]string, error) {
	raw, err := d.do(ctx, http.MethodGet, "/v1/profiles", "", nil)
	if err != nil {
		return nil, err
	}
	var body struct {
		Profiles []broker.Status `json:"profiles"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, fmt.Errorf("the daemon at %s answered /v1/profiles with something other than its JSON: %v", d.addr, err)
	}
	held := make(map[string]string)
	for _, p := range body.Profiles {
		if p.AccessKeyID != "" {
			held[p.Profile] = p.AccessKeyID
		}
	}
	return held, nil
}

// revoke calls the daemon's revoke endpoint for one profile: with keyID
// "" the daemon revokes with the profile's own credential; else keyID was
// revoked upstream already and the daemon only replaces it. No upstream
// credential is ever sent.
func (d *daemonClient) revoke(ctx context.Context, profile, admin, keyID string) (*broker.Revocation, error) {
	var body []byte
	if keyID != "" {
		var err error
		if body, err = json.Marshal(struct {
			RevokedAccessKeyID string `json:"revokedAccessKeyId"`
		}{keyID}); err != nil {
			return nil, err
		}
	}
	raw, err := d.do(ctx, http.MethodPost, "/v1/profiles/"+url.PathEscape(profile)+"/revoke", admin, body)
	if err != nil {
		return nil, err
	}
	var rev broker.Revocation
	if err := json.Unmarshal(raw, &rev); err != nil || rev.RevokedAccessKeyID == "" {
		return nil, fmt.Errorf("the daemon's answer is not a revocation report")
	}
	return &rev, nil
}

// readAdminToken reads the daemon's admin token file, explaining who may.
func readAdminToken(path string) (string, error) {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrPermission):
		return "", fmt.Errorf("cannot read the daemon's admin token %s: permission denied; run revoke as the daemon's user or root", path)
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("no admin token at %s: is the daemon running? It writes the file at start-up in its runtime "+
			"directory; pass --admin-token-file, or set CWCREDS_RUNTIME_DIR as the daemon has it", path)
	case err != nil:
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4<<10))
	if err != nil {
		return "", fmt.Errorf("read admin token %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token file %s is empty", path)
	}
	return tok, nil
}
