package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// emulatorCmd runs the CoreWeave API emulator as a process, for end-to-end
// tests and benchmarks driven from outside Go. With --s3-admin-url every
// minted key is registered as a user with a versitygw S3 server before the
// mint is answered, and revoked (and, after a grace period, expired) keys
// are deleted from it, so the keys minted "upstream" are exactly the keys
// the S3 server accepts.
func emulatorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("emulator", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	urlFile := fs.String("url-file", "", "also write the emulator's base URL to this file once it listens")
	apiTokenFile := fs.String("api-token-file", "", "register the CoreWeave API access token held in this file")
	principal := fs.String("principal", "coreweave/e2e-user", "principal of the API token's identity")
	orgID := fs.String("org-id", "cw-e2e", "organization of the API token, OIDC issuer and SAML configuration")
	oidcIssuer := fs.String("oidc-issuer", "", "register this OIDC issuer (tokens: cwapitest.MakeJWT; signatures are not checked)")
	oidcAudience := fs.String("oidc-audience", "", "audience the OIDC issuer's tokens must carry (empty: any)")
	samlConfig := fs.String("saml-config-id", "", "register a SAML configuration with this ID")
	adminURL := fs.String("s3-admin-url", "", "versitygw admin API base URL; when set, every minted key becomes a versitygw user")
	adminAccess := fs.String("s3-admin-access", "", "versitygw root access key id")
	adminSecret := fs.String("s3-admin-secret", "", "versitygw root secret key")
	adminRegion := fs.String("s3-region", "us-east-1", "region versitygw was started with (it signs admin requests)")
	grace := fs.Duration("s3-expired-grace", 30*time.Second, "delete a key from the S3 server this long after it expires; 0 keeps expired keys")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *adminURL != "" && (*adminAccess == "" || *adminSecret == "") {
		return &usageError{errors.New("emulator: --s3-admin-url needs --s3-admin-access and --s3-admin-secret")}
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s emulator: %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}

	var s3 *vgwAdmin
	if *adminURL != "" {
		u, err := url.Parse(*adminURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &usageError{fmt.Errorf("emulator: --s3-admin-url %q is not an http(s) URL", *adminURL)}
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
			return fmt.Errorf("emulator: --api-token-file: %w", err)
		}
		emu.AddAPIToken(tok, cwapitest.Identity{Principal: *principal, OrgID: *orgID})
	}
	if *oidcIssuer != "" {
		emu.AddOIDCIssuer(*oidcIssuer, cwapitest.OIDCIssuer{OrgID: *orgID, Audience: *oidcAudience})
	}
	if *samlConfig != "" {
		emu.AddSAMLConfig(*samlConfig, cwapitest.SAMLConfig{OrgID: *orgID})
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("emulator: listen on %s: %w", *listen, err)
	}
	base := "http://" + ln.Addr().String()
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile, []byte(base), 0o644); err != nil {
			srv.Close()
			return fmt.Errorf("emulator: --url-file: %w", err)
		}
	}
	fmt.Fprintln(stdout, base)
	logf("CoreWeave API emulator listening at %s", base)

	if s3 != nil && *grace > 0 {
		go s3.deleteExpired(ctx, *grace, logf)
	}
	select {
	case err := <-serveErr:
		return fmt.Errorf("emulator: serve: %w", err)
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

// vgwAdmin calls the versitygw admin API (PATCH /create-user and
// /delete-user, SigV4-signed with the root key, as `versitygw admin` does).
type vgwAdmin struct {
	base   string
	creds  aws.Credentials
	region string
	client *http.Client

	mu    sync.Mutex
	users map[string]time.Time // registered key id -> expiry (zero: never)
}

// vgwAccount is versitygw's auth.Account as its admin API reads it (XML of
// the Go struct, no tags).
type vgwAccount struct {
	XMLName   xml.Name `xml:"Account"`
	Access    string   `xml:"Access"`
	Secret    string   `xml:"Secret"`
	Role      string   `xml:"Role"`
	UserID    int      `xml:"UserID"`
	GroupID   int      `xml:"GroupID"`
	ProjectID int      `xml:"ProjectID"`
}

func (a *vgwAdmin) createUser(ctx context.Context, access, secret string, expiry time.Time) error {
	body, err := xml.Marshal(vgwAccount{Access: access, Secret: secret, Role: "user"})
	if err != nil {
		return err
	}
	// A mint must not be answered before the S3 server knows the key, so
	// retry briefly rather than hand out a key nobody accepts.
	for attempt := 0; ; attempt++ {
		err = a.do(ctx, "/create-user", body)
		if err == nil || attempt == 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.users[access] = expiry
	a.mu.Unlock()
	return nil
}

func (a *vgwAdmin) deleteUser(ctx context.Context, access string) error {
	if err := a.do(ctx, "/delete-user?access="+url.QueryEscape(access), nil); err != nil {
		return err
	}
	a.mu.Lock()
	delete(a.users, access)
	a.mu.Unlock()
	return nil
}

func (a *vgwAdmin) do(ctx context.Context, path string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, a.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	payload := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", payload)
	if err := v4.NewSigner().SignHTTP(ctx, a.creds, req, payload, "s3", a.region, time.Now()); err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("versitygw %s: %s: %s", strings.SplitN(path, "?", 2)[0], resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// deleteExpired removes keys from the S3 server grace after they expire,
// so a client still signing with an expired key fails as it would at
// CoreWeave.
func (a *vgwAdmin) deleteExpired(ctx context.Context, grace time.Duration, logf func(string, ...any)) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var due []string
		a.mu.Lock()
		for id, exp := range a.users {
			if !exp.IsZero() && now.After(exp.Add(grace)) {
				due = append(due, id)
			}
		}
		a.mu.Unlock()
		for _, id := range due {
			if err := a.deleteUser(ctx, id); err != nil {
				logf("ERROR deleting expired key %s from the S3 server: %v", id, err)
				continue
			}
			logf("key %s expired; deleted from the S3 server", id)
		}
	}
}
