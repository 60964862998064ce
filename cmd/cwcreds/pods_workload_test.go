package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
	"github.com/cwcreds/cwcreds/config"
	"github.com/cwcreds/cwcreds/peer"
	"github.com/cwcreds/cwcreds/server"
)

// The daemon as a pod meets it (issue 15): the node built by newNode from
// an operator's configuration, served by the daemon's HTTP server over a
// real listener whose connections carry the addresses a pod's connection
// to the node's pod identity address has (server/pods_test.go does the same
// for the server alone). aws-sdk-go-v2 resolves its credentials from
// nothing but AWS_CONTAINER_CREDENTIALS_FULL_URI and the token variables,
// with the SDK's own host rules; only its dialer is pointed at the listener.

var (
	podIdentityAddr = netip.MustParseAddrPort("169.254.170.23:7911")
	podAddr         = netip.MustParseAddrPort("10.244.3.17:51234")
	nodeLoopback    = netip.MustParseAddrPort("127.0.0.1:7911")
)

// peerListener accepts real connections and presents them as made from
// remote to local.
type peerListener struct {
	net.Listener
	local, remote netip.AddrPort
}

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return peerConn{c, net.TCPAddrFromAddrPort(l.local), net.TCPAddrFromAddrPort(l.remote)}, nil
}

type peerConn struct {
	net.Conn
	local, remote net.Addr
}

func (c peerConn) LocalAddr() net.Addr  { return c.local }
func (c peerConn) RemoteAddr() net.Addr { return c.remote }

// podNode is a daemon node with a workload-oidc profile ("pods"), an
// operator profile without ALLOW_PODS ("ops") and one with it ("shared"),
// on an emulated CoreWeave whose own issuer signs the pods' tokens.
type podNode struct {
	emu    *cwapitest.Emulator
	iss    *cwapitest.Issuer
	node   *node
	tokens map[string]string
	logs   *syncBuffer
	dir    string
}

func newPodNode(t *testing.T) *podNode {
	t.Helper()
	clearEnv(t, "CWCREDS_")
	emu, emuSrv, iss := issuingUpstream(t)
	dir := t.TempDir()
	apiToken := "CW-SECRET-" + randomHex(16)
	emu.AddAPIToken(apiToken, cwapitest.Identity{Principal: "coreweave/u-ops", OrgID: "cw123"})
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CWCREDS_LISTEN_ADDR":               nodeLoopback.String() + "," + podIdentityAddr.String(),
		"CWCREDS_API_URL":                   emuSrv.URL,
		"CWCREDS_LOG_LEVEL":                 "debug",
		"CWCREDS_RUNTIME_DIR":               filepath.Join(dir, "run"),
		"CWCREDS_NODE_NAME":                 "gpu-node-7",
		"CWCREDS_PROFILES":                  "pods,ops,shared",
		"CWCREDS_PROFILE_PODS_SOURCE":       "workload-oidc",
		"CWCREDS_PROFILE_PODS_ORG_ID":       "cw123",
		"CWCREDS_PROFILE_PODS_ISSUERS":      iss.URL(),
		"CWCREDS_PROFILE_OPS_SOURCE":        "access-key",
		"CWCREDS_PROFILE_OPS_TOKEN_FILE":    tokenFile,
		"CWCREDS_PROFILE_SHARED_SOURCE":     "access-key",
		"CWCREDS_PROFILE_SHARED_TOKEN_FILE": tokenFile,
		"CWCREDS_PROFILE_SHARED_ALLOW_PODS": "true",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(os.Environ())
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	logs := &syncBuffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel)
	n, tokens, err := newNode(cfg, log, nodeOptions{})
	if err != nil {
		t.Fatalf("newNode: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { n.cache.Run(ctx); done <- struct{}{} }()
	go func() { n.srv.RunAudit(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return &podNode{emu: emu, iss: iss, node: n, tokens: tokens, logs: logs, dir: dir}
}

// listen serves the node's handler, as serveWith does, on a real loopback
// listener whose connections look made from remote to local; it returns
// the real address to dial.
func (p *podNode) listen(t *testing.T, local, remote netip.AddrPort) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := server.NewHTTPServer(local.String(), p.node.srv, zerolog.Nop())
	if p.node.identifyPeers {
		srv.ConnContext = peer.ConnContext
	}
	go func() { _ = srv.Serve(peerListener{ln, local, remote}) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// sdkRetrieve resolves credentials as aws-sdk-go-v2 does in a pod whose
// environment has only AWS_CONTAINER_CREDENTIALS_FULL_URI=uri and the
// token (a file, or the env token when tokenFile is ""), every connection
// going to dial.
func sdkRetrieve(t *testing.T, dial, uri, tokenFile, envToken string) (aws.Credentials, error) {
	t.Helper()
	clearEnv(t, "AWS_")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)
	if tokenFile != "" {
		t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tokenFile)
	}
	if envToken != "" {
		t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", envToken)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "US-EAST-04A")
	var d net.Dialer
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, dial)
	}}, Timeout: 10 * time.Second}
	ctx := context.Background()
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithEndpointCredentialOptions(func(o *endpointcreds.Options) {
		o.HTTPClient = hc
		o.Retryer = aws.NopRetryer{}
	}))
	if err != nil {
		t.Fatalf("LoadDefaultConfig: %v", err)
	}
	return cfg.Credentials.Retrieve(ctx)
}

// writeToken writes tok where a projected token would be.
func writeToken(t *testing.T, dir, tok string) string {
	t.Helper()
	p := filepath.Join(dir, "token")
	if err := os.WriteFile(p, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// podGetCode sends GET path with Host host and auth to dial and returns the
// status and the JSON error code.
func podGetCode(t *testing.T, dial, host, path, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+dial+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Code string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Code
}

func TestPodGetsWorkloadKeyButNotOperatorProfile(t *testing.T) {
	p := newPodNode(t)
	pod := p.listen(t, podIdentityAddr, podAddr)
	uri := "http://" + podIdentityAddr.String() + "/v1/credentials/"
	spec := cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "trainer-0", Node: "gpu-node-7"}
	tokenDir := t.TempDir()

	// A real workload-oidc profile, served to the pod for its own token.
	creds, err := sdkRetrieve(t, pod, uri+"pods", writeToken(t, tokenDir, p.iss.Token(spec)), "")
	if err != nil {
		t.Fatalf("workload profile from a pod: %v", err)
	}
	key, ok := p.emu.Key(creds.AccessKeyID)
	if !ok {
		t.Fatalf("served key %s was not minted upstream", creds.AccessKeyID)
	}
	if want := "role/" + p.iss.URL() + ":system:serviceaccount:ml:trainer"; key.Principal != want ||
		key.Attributes["k8s-pod"] != "trainer-0" || key.Attributes["cwcreds-profile"] != "pods" {
		t.Errorf("key minted for %q with %v; want principal %q, pod trainer-0, profile pods", key.Principal, key.Attributes, want)
	}
	mints := oidcMintsOf(p.emu)
	if mints != 1 {
		t.Errorf("OIDC mints = %d after one token, want 1", mints)
	}

	// Refused when its token is bad: expired (locally, 401), forged
	// (upstream refuses it, 403), none at all (401); no key, and no
	// upstream call but the forged token's one.
	for _, tc := range []struct {
		name, token string
		status      int
		code        string
	}{
		{"expired", p.iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Pod: "trainer-1", TTL: -2 * time.Minute}), 401, "InvalidToken"},
		{"forged signature", p.iss.Forge(spec, cwapitest.ForgeForeignKey), 403, "TokenRejected"},
		{"no token", "", 401, "Unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.token != "" {
				_, err = sdkRetrieve(t, pod, uri+"pods", writeToken(t, t.TempDir(), tc.token), "")
			} else {
				_, err = sdkRetrieve(t, pod, uri+"pods", "", "")
			}
			if err == nil {
				t.Fatal("the SDK got a key for a bad token")
			}
			if status, code := podGetCode(t, pod, podIdentityAddr.String(), "/v1/credentials/pods", tc.token); status != tc.status || code != tc.code {
				t.Errorf("GET with a %s token from a pod: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
			}
		})
	}
	if got := oidcMintsOf(p.emu); got != mints {
		t.Errorf("OIDC mints = %d after the bad tokens, want still %d", got, mints)
	}

	// The operator profile without ALLOW_PODS: refused to the same pod
	// (403) with its right client token; served to it with ALLOW_PODS; and
	// served on loopback, the node's own processes, as before.
	_, err = sdkRetrieve(t, pod, uri+"ops", "", p.tokens["ops"])
	var apiErr interface{ HTTPStatusCode() int }
	if err == nil {
		t.Fatal("the SDK got the ops key from a pod")
	} else if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode() != http.StatusForbidden {
		t.Errorf("ops from a pod: %v, want a 403", err)
	}
	if status, code := podGetCode(t, pod, podIdentityAddr.String(), "/v1/credentials/ops", p.tokens["ops"]); status != 403 || code != "Forbidden" {
		t.Errorf("GET ops from a pod: %d %s, want 403 Forbidden", status, code)
	}
	if _, err := sdkRetrieve(t, pod, uri+"shared", "", p.tokens["shared"]); err != nil {
		t.Errorf("the ALLOW_PODS profile from a pod: %v", err)
	}
	local := p.listen(t, nodeLoopback, netip.MustParseAddrPort("127.0.0.1:40000"))
	if _, err := sdkRetrieve(t, local, "http://"+nodeLoopback.String()+"/v1/credentials/ops", "", p.tokens["ops"]); err != nil {
		t.Errorf("ops on loopback: %v", err)
	}
	// The pod listener's Host guard: only its own address.
	if status, _ := podGetCode(t, pod, nodeLoopback.String(), "/v1/credentials/shared", p.tokens["shared"]); status != 403 {
		t.Errorf("a loopback Host on the pod identity address: %d, want 403", status)
	}

	// The audit trail names the pod's address and why it was refused.
	logs := p.logs.String()
	if !strings.Contains(logs, `"profile":"ops"`) || !strings.Contains(logs, "profile not served to pods") ||
		!strings.Contains(logs, "address "+podAddr.Addr().String()) {
		t.Errorf("no refusal line for ops naming the pod's address in the logs:\n%s", logs)
	}
	if strings.Contains(logs, p.tokens["ops"]) || strings.Contains(logs, "eyJ") {
		t.Error("a token is in the logs")
	}
}

// oidcMintsOf is how many OIDC mints emu has made.
func oidcMintsOf(emu *cwapitest.Emulator) int {
	return emu.Stats().Mints[cwapitest.EndpointOIDC]
}
