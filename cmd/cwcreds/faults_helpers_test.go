package main

// The in-process daemon the upstream fault tests (faults_test.go) drive
// inside a testing/synctest bubble: the real cwapi.Client, minters,
// broker.Cache with Run, and server.Server, built by the daemon's own
// newNode from a configuration, against the real emulator. Only the network is replaced: the
// broker's HTTP client reaches the emulator through fakeUpstream, and
// clients call the server's handler directly, so no socket stops the
// bubble's fake clock and hours of key lifetime pass in milliseconds.

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
	"github.com/cwcreds/cwcreds/config"
	"github.com/cwcreds/cwcreds/server"
)

// upstreamCall is one request the broker sent upstream, as the transport
// saw it.
type upstreamCall struct {
	Method     string
	Path       string
	Start, End time.Time
	// Status is the reply's HTTP status; 0 when there was no reply.
	Status int
	// Err is the transport error when there was no reply.
	Err string
	// Down: refused by the simulated outage, never reached the emulator.
	Down bool
}

// fakeUpstream is an http.RoundTripper that hands each request to an
// in-process handler (the emulator) instead of a connection. While down it
// refuses every request the way a dial to a closed port does. It honours
// the request's context like a real transport: when the context ends first
// it returns the context's error and abandons the reply. It records every
// call.
type fakeUpstream struct {
	handler http.Handler
	down    atomic.Bool

	mu    sync.Mutex
	calls []upstreamCall
}

var upstreamAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}

func (u *fakeUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	if u.down.Load() {
		if req.Body != nil {
			req.Body.Close()
		}
		err := &net.OpError{Op: "dial", Net: "tcp", Addr: upstreamAddr, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		u.record(upstreamCall{Method: req.Method, Path: req.URL.Path, Start: start, End: start, Err: err.Error(), Down: true})
		return nil, err
	}
	sreq := httptest.NewRequestWithContext(req.Context(), req.Method, req.URL.String(), req.Body)
	sreq.Header = req.Header.Clone()
	sreq.RemoteAddr = "127.0.0.1:40000"
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.handler.ServeHTTP(rec, sreq)
		if req.Body != nil {
			req.Body.Close()
		}
	}()
	select {
	case <-done:
		resp := rec.Result()
		resp.Request = req
		u.record(upstreamCall{Method: req.Method, Path: req.URL.Path, Start: start, End: time.Now(), Status: resp.StatusCode})
		return resp, nil
	case <-req.Context().Done():
		err := req.Context().Err()
		u.record(upstreamCall{Method: req.Method, Path: req.URL.Path, Start: start, End: time.Now(), Err: err.Error()})
		return nil, err
	}
}

func (u *fakeUpstream) record(c upstreamCall) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls = append(u.calls, c)
}

// callsTo returns the calls to path, in the order they started. Listing
// keys (GET, for orphan reaping) shares the access-key mint's path but is
// not a mint: it is left out.
func (u *fakeUpstream) callsTo(path string) []upstreamCall {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []upstreamCall
	for _, c := range u.calls {
		if c.Path == path && !(path == cwapi.PathAccessKey && c.Method == http.MethodGet) {
			out = append(out, c)
		}
	}
	// Recorded at their end: a slow call that started first may come later.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Start.Before(out[j-1].Start); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// keyWarmup is how long a refreshed key is held back, the previous one
// being served meanwhile: the daemon's default (config.defaultKeyWarmup).
const keyWarmup = 5 * time.Second

// rigProfile is one profile of a rig.
type rigProfile struct {
	name   string
	source cwapi.Source // SourceAccessKey or SourceOIDC
	// duration is the key lifetime asked for; default 1h.
	duration time.Duration
	// upstreamToken, if set, is written to the token file instead of the
	// rig's registered API token (access-key) or a valid JWT (oidc).
	upstreamToken string
}

// rig is a daemon inside a synctest bubble. Create it with newRig inside
// synctest.Test; it stops when the test ends.
type rig struct {
	t        *testing.T
	emu      *cwapitest.Emulator
	up       *fakeUpstream
	cache    *broker.Cache
	srv      *server.Server
	tokens   map[string]string // client tokens by profile
	apiToken string            // the upstream API token the emulator knows
	jwt      string            // a valid OIDC token
	logs     *syncBuffer
	// secrets never to be shown: upstream tokens and client tokens.
	secrets map[string]string
}

const (
	rigOrg      = "cw123"
	rigIssuer   = "https://oidc.example.test/id/cluster"
	rigAudience = "https://coreweave.com/iam"
)

// newRig builds the daemon for profiles the way serve does with default
// settings, with the broker's HTTP client (cwapi.NewHTTPClient, timeouts
// included) sending through a fakeUpstream to a fresh emulator, and jitter
// drawn from a logged seed. setup runs before the cache starts. Logging is
// at info, the daemon's default level, as JSON.
func newRig(t *testing.T, setup func(*rig), profiles ...rigProfile) *rig {
	t.Helper()
	r := &rig{
		t:        t,
		emu:      cwapitest.New(cwapitest.Options{}),
		tokens:   make(map[string]string),
		apiToken: "CW-SECRET-" + randomHex(16),
		logs:     &syncBuffer{},
		secrets:  make(map[string]string),
	}
	r.up = &fakeUpstream{handler: r.emu}
	r.emu.AddAPIToken(r.apiToken, cwapitest.Identity{Principal: "coreweave/u-train", OrgID: rigOrg})
	// The upstream is never dialled, so the issuer is not served either:
	// the emulator reads its keys directly.
	iss, err := cwapitest.NewIssuer(rigIssuer, cwapitest.IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.emu.AddOIDCIssuer(rigIssuer, cwapitest.OIDCIssuer{OrgID: rigOrg, Audience: rigAudience, Issuer: iss})
	r.jwt = iss.Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer", Audience: []string{rigAudience}, TTL: 48 * time.Hour})
	r.secrets["upstream API token"] = r.apiToken
	r.secrets["OIDC token"] = r.jwt
	if setup != nil {
		setup(r)
	}

	log, err := newLogger("info", "json", r.logs)
	if err != nil {
		t.Fatal(err)
	}
	// The configuration config.Load would give for these profiles with
	// every other setting at its default.
	dir := t.TempDir()
	cfg := &config.Config{
		ListenAddr: "127.0.0.1:0",
		APIURL:     "http://127.0.0.1:9", // never dialled: fakeUpstream answers
		LogLevel:   "info",
		LogFormat:  "json",
		RuntimeDir: dir,
		NodeName:   "gpu-node-7",
		KeyWarmup:  keyWarmup,
	}
	for _, p := range profiles {
		if p.duration == 0 {
			p.duration = time.Hour
		}
		tok := p.upstreamToken
		switch {
		case tok != "":
			r.secrets[p.name+" upstream token"] = tok
		case p.source == cwapi.SourceOIDC:
			tok = r.jwt
		default:
			tok = r.apiToken
		}
		tokenFile := filepath.Join(dir, p.name+".upstream")
		if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cp := config.Profile{Name: p.name, EnvName: strings.ToUpper(p.name), Source: string(p.source), TokenFile: tokenFile,
			Duration: p.duration, ClientTokenFile: filepath.Join(dir, p.name+".token")}
		if p.source == cwapi.SourceOIDC {
			cp.OrgID = rigOrg
		}
		cfg.Profiles = append(cfg.Profiles, cp)
	}
	httpClient := cwapi.NewHTTPClient()
	httpClient.Transport = r.up
	d, tokens, err := newNode(cfg, log, nodeOptions{httpClient: httpClient, rand: seededRand(t)})
	if err != nil {
		t.Fatal(err)
	}
	r.cache, r.srv, r.tokens = d.cache, d.srv, tokens
	for name, ct := range tokens {
		r.secrets[name+" client token"] = ct
	}
	r.secrets["admin token"] = readTrimmed(t, adminTokenPath(dir))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.cache.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// seededRand returns a jitter source for broker.CacheOptions.Rand, safe for
// concurrent use. Its seed is random unless FAULT_TEST_SEED sets it, and is
// logged, so a failure can be replayed exactly.
func seededRand(t *testing.T) func() float64 {
	seed := mrand.Uint64()
	if s := os.Getenv("FAULT_TEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("FAULT_TEST_SEED=%q: %v", s, err)
		}
	}
	t.Logf("jitter seed %d (replay with FAULT_TEST_SEED=%d)", seed, seed)
	var mu sync.Mutex
	src := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return src.Float64()
	}
}

// clientReply is what a client got for a credential request.
type clientReply struct {
	At     time.Time     // when the request was sent
	Took   time.Duration // fake time until the answer
	Status int
	KeyID  string // 200 only
	Secret string // 200 only
	Code   string // error replies only
	Msg    string // error replies only
	Raw    string
	CType  string
}

// get asks for profile's key as an SDK would (Host 127.0.0.1, the client
// token), giving up after timeout (0: never).
func (r *rig) get(profile string, timeout time.Duration) clientReply {
	r.t.Helper()
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:7911/v1/credentials/"+profile, nil)
	req.RemoteAddr = "127.0.0.1:50000"
	req.Header.Set("Authorization", r.tokens[profile])
	rec := httptest.NewRecorder()
	start := time.Now()
	r.srv.ServeHTTP(rec, req)
	out := clientReply{At: start, Took: time.Since(start), Status: rec.Code, Raw: rec.Body.String(),
		CType: rec.Header().Get("Content-Type")}
	var body struct {
		AccessKeyID     string `json:"AccessKeyId"`
		SecretAccessKey string `json:"SecretAccessKey"`
		Code            string `json:"code"`
		Message         string `json:"message"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		r.t.Errorf("GET %s at %s: %d reply is not JSON: %q", profile, r.since(start), rec.Code, rec.Body)
	}
	if rec.Code == http.StatusOK {
		out.KeyID, out.Secret = body.AccessKeyID, body.SecretAccessKey
	} else {
		out.Code, out.Msg = body.Code, body.Message
	}
	return out
}

// status reads profile's entry on the /v1/profiles status page, and the
// raw page.
func (r *rig) status(profile string) (broker.Status, string) {
	r.t.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:7911/v1/profiles", nil)
	req.RemoteAddr = "127.0.0.1:50000"
	rec := httptest.NewRecorder()
	r.srv.ServeHTTP(rec, req)
	var page struct {
		Profiles []broker.Status `json:"profiles"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); rec.Code != http.StatusOK || err != nil {
		r.t.Fatalf("/v1/profiles = %d %s (%v)", rec.Code, rec.Body, err)
	}
	for _, s := range page.Profiles {
		if s.Profile == profile {
			return s, rec.Body.String()
		}
	}
	r.t.Fatalf("/v1/profiles has no profile %q: %s", profile, rec.Body)
	return broker.Status{}, ""
}

// logLine is one parsed JSON log line.
type logLine map[string]any

func (l logLine) str(k string) string { s, _ := l[k].(string); return s }

// logLines parses every log line; a line that is not JSON fails the test.
func (r *rig) logLines() []logLine {
	r.t.Helper()
	var out []logLine
	for _, s := range strings.Split(strings.TrimSpace(r.logs.String()), "\n") {
		if s == "" {
			continue
		}
		var l logLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			r.t.Fatalf("log line is not JSON: %q", s)
		}
		out = append(out, l)
	}
	return out
}

// events returns the log lines of event for profile.
func (r *rig) events(event, profile string) []logLine {
	var out []logLine
	for _, l := range r.logLines() {
		if l.str("event") == event && l.str("profile") == profile {
			out = append(out, l)
		}
	}
	return out
}

// checkClean fails if the logs or the extra texts hold any upstream token,
// client token, admin token, minted secret or extra secret.
func (r *rig) checkClean(extra string, more map[string]string) {
	r.t.Helper()
	secrets := make(map[string]string, len(r.secrets)+len(more))
	for k, v := range r.secrets {
		secrets[k] = v
	}
	for k, v := range more {
		secrets[k] = v
	}
	for _, k := range r.emu.Keys() {
		secrets["secret of "+k.AccessKeyID] = k.SecretKey
	}
	checkNoSecrets(r.t, "the daemon's log", r.logs.String(), secrets)
	checkNoSecrets(r.t, "status pages and error bodies", extra, secrets)
}

// since formats t as an offset from the bubble's epoch, for messages.
func (r *rig) since(t time.Time) string { return t.Sub(bubbleEpoch).String() }

// bubbleEpoch is where every synctest bubble's clock starts.
var bubbleEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// sleepUntil advances the bubble's clock to t, letting everything due
// before it happen.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// backoffStep is the un-jittered wait after the n-th consecutive failure
// (n >= 1) per the broker's policy: initial, doubling, capped at max. The
// broker waits a random duration in [step/2, step).
func backoffStep(initial, max time.Duration, n int) time.Duration {
	d := initial
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// checkBackoffSpacing asserts that after each failed call in failed (the
// consecutive failures since the last success, in order, each followed by
// the next call in calls), the next call started within [d/2, d) of the
// failure's end, d = backoffStep(initial, max, n). first is the number of
// the first failure in failed (1 unless failures preceded it).
func checkBackoffSpacing(t *testing.T, what string, calls []upstreamCall, first int, initial, max time.Duration) {
	t.Helper()
	for i := 0; i+1 < len(calls); i++ {
		n := first + i
		d := backoffStep(initial, max, n)
		gap := calls[i+1].Start.Sub(calls[i].End)
		if gap < d/2 || gap >= d {
			t.Errorf("%s: failure %d ended at %s, next call %s later; want within [%s, %s)",
				what, n, calls[i].End.Sub(bubbleEpoch), gap, d/2, d)
		}
	}
}

// attemptBounds returns the fewest and most calls that can start in a
// window of length w after a first failed call at its start, when each
// call takes took and the wait after the n-th failure is in
// [step/2, step), step = backoffStep(initial, max, n).
func attemptBounds(w, took, initial, max time.Duration) (lo, hi int) {
	count := func(gap func(d time.Duration) time.Duration) int {
		n, at := 1, took
		for {
			at += gap(backoffStep(initial, max, n))
			if at > w {
				return n
			}
			n++
			at += took
		}
	}
	return count(func(d time.Duration) time.Duration { return d }), count(func(d time.Duration) time.Duration { return d / 2 })
}

// describeCalls renders calls for failure messages.
func describeCalls(calls []upstreamCall) string {
	var b strings.Builder
	for _, c := range calls {
		fmt.Fprintf(&b, "\n  %s +%s status=%d down=%v err=%q", c.Start.Sub(bubbleEpoch), c.End.Sub(c.Start), c.Status, c.Down, c.Err)
	}
	return b.String()
}
