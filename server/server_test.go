package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// *broker.Cache is the production KeyGetter.
var _ KeyGetter = (*broker.Cache)(nil)

const (
	testProfile = "default"
	testToken   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testHost    = "127.0.0.1:7777"
)

// fakeKeys is a KeyGetter whose Get calls get (or returns creds), and whose
// Status returns status.
type fakeKeys struct {
	mu     sync.Mutex
	creds  *cwapi.Credentials
	err    error
	get    func(ctx context.Context, profile string) (*cwapi.Credentials, error)
	status []broker.Status
	calls  int
}

func (f *fakeKeys) Get(ctx context.Context, profile string) (*cwapi.Credentials, error) {
	f.mu.Lock()
	f.calls++
	get, creds, err := f.get, f.creds, f.err
	f.mu.Unlock()
	if get != nil {
		return get(ctx, profile)
	}
	return creds, err
}

func (f *fakeKeys) Status() []broker.Status { return f.status }

func (f *fakeKeys) set(creds *cwapi.Credentials, err error) {
	f.mu.Lock()
	f.creds, f.err = creds, err
	f.mu.Unlock()
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a live
// server's goroutines.
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

func testCreds() *cwapi.Credentials {
	return &cwapi.Credentials{
		AccessKeyID:     "CWAKIDEXAMPLE0001",
		SecretAccessKey: "cwoSECRETEXAMPLEVALUE",
		Principal:       "coreweave/test",
		Expires:         time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// newTestServer returns a Server for testProfile/testToken backed by keys,
// logging everything to the returned buffer.
func newTestServer(t testing.TB, keys KeyGetter, opts ...func(*Options)) (*Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	o := Options{ClientTokens: map[string]string{testProfile: testToken}}
	for _, fn := range opts {
		fn(&o)
	}
	return New(zerolog.New(logs).Level(zerolog.DebugLevel), keys, o), logs
}

// request builds a request from the loopback host, with the given headers.
func request(method, target string, header ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Host = testHost
	r.RemoteAddr = "127.0.0.1:40000"
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func credsRequest(profile, token string) *http.Request {
	if token == "" {
		return request(http.MethodGet, "/v1/credentials/"+profile)
	}
	return request(http.MethodGet, "/v1/credentials/"+profile, "Authorization", token)
}

// checkJSONError asserts rec is a JSON error with status and code, carrying
// both spellings, and returns its message.
func checkJSONError(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) string {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status = %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	if got := rec.Header().Values("Content-Type"); len(got) != 1 || got[0] != "application/json" {
		t.Errorf("Content-Type = %q, want exactly [application/json]", got)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", rec.Body, err)
	}
	if len(body) != 4 {
		t.Errorf("error body has %d members, want 4: %s", len(body), rec.Body)
	}
	for _, k := range []string{"code", "Code"} {
		if got, ok := body[k].(string); !ok || got != code {
			t.Errorf("error body %s = %#v, want %q", k, body[k], code)
		}
	}
	msg, ok := body["message"].(string)
	if !ok || msg == "" {
		t.Errorf("error body message = %#v, want a non-empty string", body["message"])
	}
	if got := body["Message"]; got != msg {
		t.Errorf("error body Message = %#v, want %q (same as message)", got, msg)
	}
	return msg
}

func TestNewHTTPServer(t *testing.T) {
	logs := &syncBuffer{}
	h := http.NotFoundHandler()
	srv := NewHTTPServer("127.0.0.1:0", h, zerolog.New(logs))
	checks := []struct {
		name      string
		got, want any
	}{
		{"Addr", srv.Addr, "127.0.0.1:0"},
		{"ReadHeaderTimeout", srv.ReadHeaderTimeout, 5 * time.Second},
		// Not set, so that a hit pays no extra deadline: a body's read and
		// every write are bounded otherwise (boundBodyReads, limitedConn.Write).
		{"ReadTimeout", srv.ReadTimeout, time.Duration(0)},
		{"WriteTimeout", srv.WriteTimeout, time.Duration(0)},
		{"IdleTimeout", srv.IdleTimeout, 30 * time.Second},
		{"MaxHeaderBytes", srv.MaxHeaderBytes, 16 << 10},
		{"DisableGeneralOptionsHandler", srv.DisableGeneralOptionsHandler, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if l := newConnLimiter(nil, DefaultConnLimits, nil, zerolog.Nop()); l.writeTimeout != 10*time.Second {
		t.Errorf("connection write bound = %s, want 10s", l.writeTimeout)
	}
	if srv.ErrorLog == nil {
		t.Fatal("ErrorLog is nil, want it routed to zerolog")
	}
	srv.ErrorLog.Printf("http: TLS handshake error from 1.2.3.4:5: EOF\n")
	if got := logs.String(); !strings.Contains(got, `"level":"warn"`) || !strings.Contains(got, `"message":"http: TLS handshake error from 1.2.3.4:5: EOF"`) {
		t.Errorf("ErrorLog line logged as %s, want a warn event with the trimmed message", got)
	}
}

// TestLiveServer runs the handler behind NewHTTPServer on a loopback
// listener and reads a key with the AWS SDK's own container-credentials
// client.
func TestLiveServer(t *testing.T) {
	keys := &fakeKeys{creds: testCreds()}
	s, _ := newTestServer(t, keys)
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = NewHTTPServer("", s, zerolog.Nop())
	ts.Start()
	defer ts.Close()
	if !strings.HasPrefix(ts.URL, "http://127.0.0.1:") {
		t.Fatalf("test server at %s, want 127.0.0.1", ts.URL)
	}

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+"/v1/credentials/"+testProfile, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", testToken)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got bytes.Buffer
	if _, err := got.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	want := `{"AccessKeyId":"CWAKIDEXAMPLE0001","SecretAccessKey":"cwoSECRETEXAMPLEVALUE","Token":"","Expiration":"2030-01-02T03:04:05Z"}`
	if resp.StatusCode != http.StatusOK || got.String() != want {
		t.Errorf("GET = %d %s, want 200 %s", resp.StatusCode, got.String(), want)
	}
	if cl, wantCL := resp.Header.Get("Content-Length"), strconv.Itoa(len(want)); cl != wantCL {
		t.Errorf("Content-Length = %q, want %q", cl, wantCL)
	}
}
