package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest/s3plane"
	"github.com/cwcreds/cwcreds/config"
)

// daemon is a cwcreds serve running in-process against an emulator.
type daemon struct {
	emu     *cwapitest.Emulator
	addr    string
	tokens  map[string]string
	cfg     *config.Config
	logs    *syncBuffer
	stop    func()
	emuURL  string
	dataDir string
}

// startDaemon configures cwcreds through the environment exactly as an
// operator would (four profiles, one per source) and runs serve.
func startDaemon(t *testing.T, setup ...func(*cwapitest.Emulator)) *daemon {
	t.Helper()
	clearEnv(t, "CWCREDS_")
	emu := cwapitest.New(cwapitest.Options{})
	for _, fn := range setup {
		fn(emu)
	}
	emuSrv := httptest.NewServer(emu)
	t.Cleanup(emuSrv.Close)

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	apiToken := "CW-SECRET-" + randomHex(16)
	emu.AddAPIToken(apiToken, cwapitest.Identity{Principal: "coreweave/u-train", OrgID: "cw123"})
	// The emulator's own issuer, served at emuSrv.URL+"/oidc", signs the
	// workload's token; the emulator verifies it against that issuer's keys.
	iss, err := emu.StartIssuer(emuSrv.URL, cwapitest.OIDCIssuer{OrgID: "cw123", Audience: cwapitest.DefaultAudience})
	if err != nil {
		t.Fatal(err)
	}
	emu.AddSAMLConfig("samlcfg", cwapitest.SAMLConfig{OrgID: "cw123"})

	credDir := filepath.Join(dir, "credentials")
	if err := os.Mkdir(credDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// 0440, as systemd ≥ 254 hands LoadCredential= files over (root-owned,
	// with an ACL for the service user): trusted because it lies in
	// $CREDENTIALS_DIRECTORY, though refused anywhere else.
	if err := os.WriteFile(filepath.Join(credDir, "api-token"), []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(credDir, "api-token"), 0o440); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CWCREDS_LISTEN_ADDR":                      "127.0.0.1:0",
		"CWCREDS_API_URL":                          emuSrv.URL,
		"CWCREDS_LOG_LEVEL":                        "debug",
		"CWCREDS_RUNTIME_DIR":                      filepath.Join(dir, "run"),
		"CWCREDS_NODE_NAME":                        "gpu-node-7",
		"CREDENTIALS_DIRECTORY":                    credDir,
		"CWCREDS_PROFILES":                         "train,fast-exchange,wif,sso",
		"CWCREDS_PROFILE_TRAIN_SOURCE":             "access-key",
		"CWCREDS_PROFILE_TRAIN_TOKEN_FILE":         "api-token", // relative: resolved in $CREDENTIALS_DIRECTORY
		"CWCREDS_PROFILE_TRAIN_DURATION":           "2h",
		"CWCREDS_PROFILE_FAST_EXCHANGE_SOURCE":     "api-token",
		"CWCREDS_PROFILE_FAST_EXCHANGE_TOKEN_FILE": filepath.Join(credDir, "api-token"),
		"CWCREDS_PROFILE_WIF_SOURCE":               "oidc",
		"CWCREDS_PROFILE_WIF_TOKEN_FILE":           write("jwt", iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer"})),
		"CWCREDS_PROFILE_WIF_ORG_ID":               "cw123",
		"CWCREDS_PROFILE_SSO_SOURCE":               "saml",
		"CWCREDS_PROFILE_SSO_TOKEN_FILE":           write("saml", cwapitest.MakeSAMLResponse("researchers", "alice@example.com")),
		"CWCREDS_PROFILE_SSO_ORG_ID":               "cw123",
		"CWCREDS_PROFILE_SSO_CONFIG_ID":            "samlcfg",
		"CWCREDS_PROFILE_SSO_DURATION":             "30m",
	}
	return runWithEnv(t, emu, emuSrv.URL, dir, env)
}

// runWithEnv sets env (on top of a cleared CWCREDS_*), loads the
// configuration from the environment as the daemon does, and runs serve
// against emu (served at emuURL), with dir for its files.
func runWithEnv(t *testing.T, emu *cwapitest.Emulator, emuURL, dir string, env map[string]string) *daemon {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(os.Environ())
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	d := &daemon{emu: emu, cfg: cfg, logs: &syncBuffer{}, emuURL: emuURL, dataDir: dir}
	d.run(t, serveHooks{})
	return d
}

// run starts serveWith for d.cfg with h, waits until it serves and sets
// d.addr, d.tokens and d.stop (also run at cleanup).
func (d *daemon) run(t *testing.T, h serveHooks) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	h.ready = func(a net.Addr, tokens map[string]string) {
		d.addr, d.tokens = a.String(), tokens
		close(ready)
	}
	go func() { done <- serveWith(ctx, d.cfg, d.logs, h) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	}
	d.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v", err)
		}
	}
	t.Cleanup(func() {
		if d.stop != nil {
			d.stop()
		}
	})
}

// clearEnv removes variables with prefix for the test (restored after).
func clearEnv(t *testing.T, prefix string) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, prefix) {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func (d *daemon) get(t *testing.T, profile, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.addr+"/v1/credentials/"+profile, nil)
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: body is not JSON: %v", profile, err)
	}
	return resp.StatusCode, body
}

func TestAWSSDKGetsKeyThroughDaemonAndSignsS3Request(t *testing.T) {
	d := startDaemon(t)
	// The emulator's S3 plane: it accepts a request only when its SigV4
	// signature verifies with the secret of a key the emulator minted.
	plane := s3plane.New(s3plane.Options{Keys: d.emu})
	if err := plane.CreateBucket("shared"); err != nil {
		t.Fatal(err)
	}
	s3ts := httptest.NewServer(plane)
	defer s3ts.Close()

	// Exactly what a user's process gets: the two token variables and the URI.
	clearEnv(t, "AWS_")
	tokenFile := d.cfg.Profiles[0].ClientTokenFile
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://"+d.addr+"/v1/credentials/train")
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokenFile)
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", d.tokens["train"])
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(d.dataDir, "no-aws-config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(d.dataDir, "no-aws-credentials"))
	t.Setenv("AWS_REGION", "US-EAST-04A")

	ctx := t.Context()
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := awsCfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatalf("aws-sdk-go-v2 could not retrieve credentials from the daemon: %v", err)
	}
	key, ok := d.emu.Key(creds.AccessKeyID)
	if !ok {
		t.Fatalf("SDK got key %q, which upstream never minted", creds.AccessKeyID)
	}
	if creds.SecretAccessKey != key.SecretKey || creds.SessionToken != "" || !creds.CanExpire {
		t.Errorf("SDK credentials = %+v; want the minted key, no session token, expiring", creds)
	}
	if left := time.Until(creds.Expires); left < 114*time.Minute || left > 2*time.Hour {
		t.Errorf("SDK sees the key expire in %s, want the profile's 2h less its 5-minute expiry window", left)
	}
	if creds.Source == "" || !strings.Contains(creds.Source, "Endpoint") {
		t.Logf("credential source: %q", creds.Source)
	}

	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s3ts.URL)
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("shared"), Key: aws.String("ckpt/model.bin"), Body: bytes.NewReader(payload)}); err != nil {
		t.Fatalf("PutObject: %v (S3: %+v)", err, plane.Stats())
	}
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("shared"), Key: aws.String("ckpt/model.bin")})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if !bytes.Equal(got, payload) {
		t.Errorf("downloaded %d bytes, not the %d uploaded", len(got), len(payload))
	}
	list, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
	if err != nil || len(list.Buckets) != 1 {
		t.Fatalf("ListBuckets = %v, %v", list, err)
	}
	if st := plane.Stats(); st.AcceptedByKey[creds.AccessKeyID] != 3 || len(st.Refused) != 0 {
		t.Errorf("S3 stats %+v: want 3 requests signed with the served key accepted, none refused", st)
	}

	// The plane is not a rubber stamp: a wrong secret is refused.
	bad := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s3ts.URL)
		o.UsePathStyle = true
		o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: "wrong"}, nil
		})
		o.RetryMaxAttempts = 1
	})
	if _, err := bad.ListBuckets(ctx, &s3.ListBucketsInput{}); err == nil || plane.Stats().Refused["SignatureDoesNotMatch"] != 1 {
		t.Errorf("S3 answered %v to a request signed with the wrong secret (stats %+v), want SignatureDoesNotMatch", err, plane.Stats())
	}
	// Many SDK clients in one process, one upstream mint.
	if n := d.emu.Stats().Mints[cwapitest.EndpointAccessKey]; n != 1 {
		t.Errorf("access-key mints = %d, want 1", n)
	}
}

func TestEverySourceServesThroughDaemon(t *testing.T) {
	d := startDaemon(t)
	tests := []struct {
		profile, principal string
		lifetime           time.Duration
	}{
		{"train", "coreweave/u-train", 2 * time.Hour},
		{"fast-exchange", "coreweave/u-train", 15 * time.Minute},
		{"wif", "role/" + d.emu.Issuer().URL() + ":system:serviceaccount:ml:trainer", time.Hour},
		{"sso", "saml/researchers", 30 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.profile, func(t *testing.T) {
			status, body := d.get(t, tc.profile, d.tokens[tc.profile])
			if status != http.StatusOK {
				t.Fatalf("status %d, body %v", status, body)
			}
			for _, k := range []string{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"} {
				if _, ok := body[k]; !ok {
					t.Errorf("response lacks %s: %v", k, body)
				}
			}
			id, _ := body["AccessKeyId"].(string)
			key, ok := d.emu.Key(id)
			if !ok || key.SecretKey != body["SecretAccessKey"] {
				t.Fatalf("served key %q is not one upstream minted", id)
			}
			if key.Principal != tc.principal {
				t.Errorf("principal = %q, want %q", key.Principal, tc.principal)
			}
			exp, err := time.Parse("2006-01-02T15:04:05Z", body["Expiration"].(string))
			if err != nil {
				t.Fatalf("Expiration %q: %v", body["Expiration"], err)
			}
			if left := time.Until(exp); left < tc.lifetime-time.Minute || left > tc.lifetime {
				t.Errorf("key expires in %s, want about %s", left, tc.lifetime)
			}
			if tc.profile != "fast-exchange" { // the api-token exchange takes no attributes
				if key.Attributes["cwcreds-profile"] != tc.profile || key.Attributes["cwcreds-node"] != "gpu-node-7" {
					t.Errorf("upstream attributes = %v, want node and profile", key.Attributes)
				}
			}
		})
	}
}

func TestDaemonRefusals(t *testing.T) {
	d := startDaemon(t, func(emu *cwapitest.Emulator) {
		emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointAPIToken, Status: 401, Code: 16, Message: "token revoked"})
	})
	if status, body := d.get(t, "train", ""); status != http.StatusUnauthorized || body["Code"] == nil || body["code"] == nil {
		t.Errorf("no token: %d %v, want 401 with code and Code", status, body)
	}
	if status, _ := d.get(t, "train", d.tokens["wif"]); status != http.StatusUnauthorized {
		t.Errorf("another profile's token: %d, want 401", status)
	}
	if status, _ := d.get(t, "nope", d.tokens["train"]); status != http.StatusNotFound {
		t.Errorf("unknown profile: %d, want 404", status)
	}
	// A revoked upstream token: 503 with the reason.
	status, body := d.get(t, "fast-exchange", d.tokens["fast-exchange"])
	if status != http.StatusServiceUnavailable || !strings.Contains(body["message"].(string), "HTTP 401 (UNAUTHENTICATED)") ||
		strings.Contains(body["message"].(string), "token revoked") { // upstream's words stay in the log
		t.Errorf("revoked upstream token: %d %v, want 503 naming the reason", status, body)
	}
	d.stop()
	d.stop = nil
	for name, tok := range d.tokens {
		if strings.Contains(d.logs.String(), tok) {
			t.Errorf("log contains profile %s's client token", name)
		}
	}
	for _, k := range d.emu.Keys() {
		if strings.Contains(d.logs.String(), k.SecretKey) {
			t.Errorf("log contains the secret of %s", k.AccessKeyID)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the daemon's concurrent log writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
