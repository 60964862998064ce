// Command emulator runs the CoreWeave API emulator (package cwapitest) as a
// process, for the end-to-end, benchmark and systemd live tests driven from
// outside Go (scripts/e2e, scripts/bench, scripts/systemd-live-test). It is a
// test harness, not part of the cwcreds binary.
//
// With --s3-admin-url every minted key is registered as a user with a
// versitygw S3 server before the mint is answered, and revoked (and, after a
// grace period, expired) keys are deleted from it, so the keys minted
// "upstream" are exactly the keys the S3 server accepts.
//
// Unless --serve-oidc-issuer=false it is also an OIDC issuer: it serves a
// discovery document and JWKS at <base URL>/oidc (the issuer URL, the iss of
// its tokens) and trusts that issuer for --oidc-org-id and --oidc-audience.
// Scripts get signed tokens from POST /_emulator/oidc-tokens, rotate keys
// with POST /_emulator/oidc-rotate and read the issuer, its keys and fetch
// counts at GET /_emulator/oidc-issuer (see package cwapitest).
//
// With --s3-plane-listen it also serves the emulator's own S3 data plane
// (package s3plane) on that address: in-memory buckets that accept only
// keys this emulator minted, refusing a key younger than
// --s3-plane-delay with InvalidAccessKeyId. Its controls are on the same
// port, under a prefix no bucket name can take:
//
//	GET /_s3plane/stats                Stats (accepted, refused by code, accepted by key)
//	GET /_s3plane/propagation-delay    {"delay":"3s"}
//	PUT /_s3plane/propagation-delay    {"delay":"3s"} -> the same
//
// It prints its base URL on stdout once it listens (the issuer URL is that
// and /oidc; --oidc-issuer-file also writes it), logs on stderr, and exits
// on SIGINT or SIGTERM; status 2 means bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "emulator: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "emulator: %v\n", err)
		os.Exit(1)
	}
}

// usageError makes the process exit with status 2: a bad flag.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// run is the whole program: it serves until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("emulator", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	urlFile := fs.String("url-file", "", "also write the emulator's base URL to this file once it listens")
	apiTokenFile := fs.String("api-token-file", "", "register the CoreWeave API access token held in this file")
	principal := fs.String("principal", "coreweave/e2e-user", "principal of the API token's identity")
	orgID := fs.String("org-id", "cw-e2e", "organization of the API token, OIDC issuer and SAML configuration")
	serveIssuer := fs.Bool("serve-oidc-issuer", true, "serve an OIDC issuer at <base URL>"+cwapitest.IssuerPath+" and trust its tokens")
	issuerFile := fs.String("oidc-issuer-file", "", "also write the served OIDC issuer's URL to this file once it listens")
	oidcOrg := fs.String("oidc-org-id", "", "organization that trusts the OIDC issuers (default: --org-id)")
	oidcIssuer := fs.String("oidc-issuer", "", "also trust this external OIDC issuer; its keys come from --oidc-jwks-url or OIDC discovery")
	oidcJWKS := fs.String("oidc-jwks-url", "", "JWKS URL of --oidc-issuer (default: from its discovery document)")
	oidcAudience := fs.String("oidc-audience", cwapitest.DefaultAudience, "audience the OIDC issuers' tokens must carry (empty: any)")
	samlConfig := fs.String("saml-config-id", "", "register a SAML configuration with this ID")
	adminURL := fs.String("s3-admin-url", "", "versitygw admin API base URL; when set, every minted key becomes a versitygw user")
	adminAccess := fs.String("s3-admin-access", "", "versitygw root access key id")
	adminSecret := fs.String("s3-admin-secret", "", "versitygw root secret key")
	adminRegion := fs.String("s3-region", "us-east-1", "region versitygw was started with (it signs admin requests)")
	grace := fs.Duration("s3-expired-grace", 30*time.Second, "delete a key from the S3 server this long after it expires; 0 keeps expired keys")
	planeListen := fs.String("s3-plane-listen", "", "serve the built-in S3 data plane on this address (loopback); empty: none")
	planeURLFile := fs.String("s3-plane-url-file", "", "write the S3 data plane's base URL to this file once it listens")
	planeBuckets := fs.String("s3-plane-buckets", "", "comma-separated buckets the S3 data plane starts with")
	planeDelay := fs.Duration("s3-plane-delay", 0, "the S3 data plane refuses keys younger than this (propagation)")
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return &usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *oidcOrg == "" {
		*oidcOrg = *orgID
	}
	if *oidcJWKS != "" && *oidcIssuer == "" {
		return &usageError{errors.New("--oidc-jwks-url needs --oidc-issuer")}
	}
	if *issuerFile != "" && !*serveIssuer {
		return &usageError{errors.New("--oidc-issuer-file needs --serve-oidc-issuer")}
	}
	if *adminURL != "" && (*adminAccess == "" || *adminSecret == "") {
		return &usageError{errors.New("--s3-admin-url needs --s3-admin-access and --s3-admin-secret")}
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s emulator: %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}

	var s3 *vgwAdmin
	if *adminURL != "" {
		u, err := url.Parse(*adminURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &usageError{fmt.Errorf("--s3-admin-url %q is not an http(s) URL", *adminURL)}
		}
		s3 = &vgwAdmin{
			base:   strings.TrimRight(*adminURL, "/"),
			creds:  aws.Credentials{AccessKeyID: *adminAccess, SecretAccessKey: *adminSecret},
			region: *adminRegion,
			client: &http.Client{Timeout: 10 * time.Second},
			users:  map[string]time.Time{},
		}
	}

	opts := cwapitest.Options{}
	if s3 != nil {
		opts.OnMint = func(k cwapitest.Key) {
			if err := s3.createUser(context.WithoutCancel(ctx), k.AccessKeyID, k.SecretKey, k.Expiry); err != nil {
				logf("ERROR registering key %s with the S3 server: %v", k.AccessKeyID, err)
				return
			}
			logf("minted key %s via %s for %s (expires %s); registered with the S3 server",
				k.AccessKeyID, k.Endpoint, k.Principal, expiryText(k.Expiry))
		}
		opts.OnRevoke = func(id string) {
			if err := s3.deleteUser(context.WithoutCancel(ctx), id); err != nil {
				logf("ERROR deleting revoked key %s from the S3 server: %v", id, err)
				return
			}
			logf("revoked key %s; deleted from the S3 server", id)
		}
	} else {
		opts.OnMint = func(k cwapitest.Key) {
			logf("minted key %s via %s for %s (expires %s)", k.AccessKeyID, k.Endpoint, k.Principal, expiryText(k.Expiry))
		}
	}
	emu := cwapitest.New(opts)

	if *apiTokenFile != "" {
		// The emulator only learns which token to accept: the file's mode
		// protects nothing here, so any mode is fine.
		tok, err := cwapi.ReadTokenFileWith(*apiTokenFile, cwapi.TokenFileRules{AllowInsecureMode: true})
		if err != nil {
			return fmt.Errorf("--api-token-file: %w", err)
		}
		emu.AddAPIToken(tok, cwapitest.Identity{Principal: *principal, OrgID: *orgID})
	}
	if *oidcIssuer != "" {
		emu.AddOIDCIssuer(*oidcIssuer, cwapitest.OIDCIssuer{OrgID: *oidcOrg, Audience: *oidcAudience, JWKSURL: *oidcJWKS})
	}
	if *samlConfig != "" {
		emu.AddSAMLConfig(*samlConfig, cwapitest.SAMLConfig{OrgID: *orgID})
	}

	if *planeListen != "" {
		base, err := startPlane(ctx, emu, *planeListen, *planeBuckets, *planeDelay, *adminRegion, logf)
		if err != nil {
			return err
		}
		if *planeURLFile != "" {
			if err := os.WriteFile(*planeURLFile, []byte(base), 0o644); err != nil {
				return fmt.Errorf("--s3-plane-url-file: %w", err)
			}
		}
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	base := "http://" + ln.Addr().String()
	var issuer *cwapitest.Issuer
	if *serveIssuer {
		if issuer, err = emu.StartIssuer(base, cwapitest.OIDCIssuer{OrgID: *oidcOrg, Audience: *oidcAudience}); err != nil {
			ln.Close()
			return fmt.Errorf("OIDC issuer: %w", err)
		}
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	for _, f := range []struct{ flag, path, content string }{
		{"--url-file", *urlFile, base},
		{"--oidc-issuer-file", *issuerFile, base + cwapitest.IssuerPath},
	} {
		if f.path == "" {
			continue
		}
		if err := os.WriteFile(f.path, []byte(f.content), 0o644); err != nil {
			srv.Close()
			return fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	fmt.Fprintln(stdout, base)
	logf("CoreWeave API emulator listening at %s", base)
	if issuer != nil {
		logf("OIDC issuer %s (discovery %s, JWKS %s) trusted by organization %s for audience %q",
			issuer.URL(), issuer.URL()+cwapitest.DiscoveryPath, issuer.JWKSURL(), *oidcOrg, *oidcAudience)
	}

	if s3 != nil && *grace > 0 {
		go s3.deleteExpired(ctx, *grace, logf)
	}
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

func expiryText(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}
