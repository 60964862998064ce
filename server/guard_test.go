package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

func TestHostAllowed(t *testing.T) {
	tests := []struct {
		host          string
		loopback, any bool // want, without and with AllowNonLoopbackHosts
	}{
		{"127.0.0.1", true, true},
		{"127.0.0.1:7777", true, true},
		{"127.1.2.3", true, true},
		{"127.255.255.255:1", true, true},
		{"[::1]", true, true},
		{"[::1]:7777", true, true},
		{"[0:0:0:0:0:0:0:1]:7777", true, true},
		{"[::ffff:127.0.0.1]:7777", true, true},
		{"localhost", true, true},
		{"localhost:7777", true, true},
		{"LOCALHOST:7777", true, true},
		{"LocalHost", true, true},
		{"127.0.0.1:", true, true}, // empty port is valid URI syntax

		{"10.0.0.1", false, true},
		{"10.0.0.1:7777", false, true},
		{"169.254.169.254", false, true},
		{"169.254.170.2:80", false, true},
		{"0.0.0.0:7777", false, true},
		{"[fd00:ec2::23]:80", false, true},
		{"[2001:db8::1]", false, true},

		{"", false, false},
		{"evil.com", false, false},
		{"evil.com:7777", false, false},
		{"localhost.", false, false},
		{"localhost.evil.com", false, false},
		{"127.0.0.1.nip.io", false, false},
		{"node1.cluster.local:7777", false, false},
		{"127.1", false, false},
		{"0x7f.0.0.1", false, false},
		{"::1", false, false},            // IPv6 must be bracketed
		{"::1:7777", false, false},       // ditto
		{"[127.0.0.1]", false, false},    // IPv4 must not be
		{"[::1", false, false},           // unterminated
		{"[::1]x", false, false},         // junk after ]
		{"[fe80::1%25lo]", false, false}, // zones
		{"[fe80::1%lo]:1", false, false},
		{"127.0.0.1:http", false, false},
		{"127.0.0.1:123456", false, false},
		{"127.0.0.1:1:2", false, false},
		{"localhost:7777@evil.com", false, false},
	}
	for _, tt := range tests {
		if got := hostAllowed(tt.host, false); got != tt.loopback {
			t.Errorf("hostAllowed(%q, false) = %v, want %v", tt.host, got, tt.loopback)
		}
		if got := hostAllowed(tt.host, true); got != tt.any {
			t.Errorf("hostAllowed(%q, true) = %v, want %v", tt.host, got, tt.any)
		}
	}
}

func TestGuard(t *testing.T) {
	withHost := func(r *http.Request, host string) *http.Request { r.Host = host; return r }
	paths := []string{"/v1/credentials/" + testProfile, "/v1/profiles", "/healthz", "/nope"}
	tests := []struct {
		name     string
		req      func(path string) *http.Request
		anyIP    bool
		refused  bool
		wantCode string
	}{
		{"loopback", func(p string) *http.Request { return request("GET", p, "Authorization", testToken) }, false, false, ""},
		{"evil.com", func(p string) *http.Request {
			return withHost(request("GET", p, "Authorization", testToken), "evil.com")
		}, false, true, "Forbidden"},
		{"metadata ip", func(p string) *http.Request {
			return withHost(request("GET", p, "Authorization", testToken), "169.254.169.254")
		}, false, true, "Forbidden"},
		{"private ip", func(p string) *http.Request {
			return withHost(request("GET", p, "Authorization", testToken), "10.0.0.1:7777")
		}, false, true, "Forbidden"},
		{"private ip allowed", func(p string) *http.Request {
			return withHost(request("GET", p, "Authorization", testToken), "10.0.0.1:7777")
		}, true, false, ""},
		{"dns name with anyIP", func(p string) *http.Request {
			return withHost(request("GET", p, "Authorization", testToken), "node.example:7777")
		}, true, true, "Forbidden"},
		{"x-forwarded-for", func(p string) *http.Request {
			return request("GET", p, "Authorization", testToken, "X-Forwarded-For", "127.0.0.1")
		}, false, true, "Forbidden"},
		{"forwarded", func(p string) *http.Request {
			return request("GET", p, "Authorization", testToken, "Forwarded", "for=127.0.0.1")
		}, false, true, "Forbidden"},
		{"empty x-forwarded-for", func(p string) *http.Request {
			r := request("GET", p, "Authorization", testToken)
			r.Header["X-Forwarded-For"] = []string{""}
			return r
		}, false, true, "Forbidden"},
		{"proxy header on wrong method", func(p string) *http.Request {
			return request("POST", p, "Forwarded", "for=1.2.3.4")
		}, false, true, "Forbidden"},
	}
	for _, tt := range tests {
		for _, path := range paths {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				keys := &fakeKeys{creds: testCreds()}
				s, logs := newTestServer(t, keys, func(o *Options) { o.AllowNonLoopbackHosts = tt.anyIP })
				rec := serve(s, tt.req(path))
				if !tt.refused {
					if rec.Code == http.StatusForbidden {
						t.Errorf("status = 403, want the request let through (body %s)", rec.Body)
					}
					return
				}
				checkJSONError(t, rec, http.StatusForbidden, tt.wantCode)
				if keys.calls != 0 {
					t.Errorf("broker called %d times for a refused request", keys.calls)
				}
				if !strings.Contains(logs.String(), `"level":"warn"`) {
					t.Errorf("refusal not logged at warn: %s", logs)
				}
				if strings.Contains(logs.String(), testToken) {
					t.Errorf("logs contain the token: %s", logs)
				}
			})
		}
	}
}

func TestRecoverPanics(t *testing.T) {
	const secret = "cwoSECRET-in-a-panic-value"
	tests := []struct {
		name string
		v    any
		typ  string
	}{
		{"string", secret, "string"},
		{"error", errors.New(secret), "*errors.errorString"},
		{"credentials", &cwapi.Credentials{SecretAccessKey: secret}, "*cwapi.Credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := &fakeKeys{get: func(context.Context, string) (*cwapi.Credentials, error) { panic(tt.v) }}
			s, logs := newTestServer(t, keys)
			rec := serve(s, credsRequest(testProfile, testToken))
			msg := checkJSONError(t, rec, 500, "InternalError")
			if strings.Contains(rec.Body.String(), "SECRET") {
				t.Errorf("panic value sent to the client: %s", rec.Body)
			}
			if msg != "internal error" {
				t.Errorf("message = %q, want %q", msg, "internal error")
			}
			got := logs.String()
			if strings.Contains(got, "SECRET") {
				t.Errorf("panic value logged: %s", got)
			}
			if !strings.Contains(got, `"panic_type":"`+tt.typ+`"`) || !strings.Contains(got, `"stack":"goroutine`) {
				t.Errorf("log lacks panic_type %q or the stack: %s", tt.typ, got)
			}
		})
	}
}

func TestRecoverPanicsReraisesAbort(t *testing.T) {
	keys := &fakeKeys{get: func(context.Context, string) (*cwapi.Credentials, error) { panic(http.ErrAbortHandler) }}
	s, _ := newTestServer(t, keys)
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler re-raised", v)
		}
	}()
	serve(s, credsRequest(testProfile, testToken))
	t.Error("ServeHTTP returned, want it to panic with http.ErrAbortHandler")
}

func TestLogRequestsAtDebug(t *testing.T) {
	s, logs := newTestServer(t, &fakeKeys{creds: testCreds()})
	serve(s, credsRequest(testProfile, testToken))
	got := logs.String()
	for _, want := range []string{`"level":"debug"`, `"status":200`, `"path":"/v1/credentials/default"`} {
		if !strings.Contains(got, want) {
			t.Errorf("debug request log lacks %s: %s", want, got)
		}
	}
	if strings.Contains(got, testToken) || strings.Contains(got, "cwoSECRET") {
		t.Errorf("debug log holds a secret: %s", got)
	}
}

// TestBrowserAndProxyHeadersRefused sends each browser or proxy header, with
// a typical and an empty value, to every route (IMDS included), with an
// otherwise valid request, and wants a logged 403 that never touches the
// broker nor logs the token.
func TestBrowserAndProxyHeadersRefused(t *testing.T) {
	headers := []struct{ name, value, reason string }{
		{"Origin", "https://evil.example", "browser"},
		{"Origin", "null", "browser"},
		{"Origin", "http://127.0.0.1:7777", "browser"}, // same origin still means a browser
		{"Sec-Fetch-Site", "cross-site", "browser"},
		{"Sec-Fetch-Site", "same-origin", "browser"},
		{"Sec-Fetch-Site", "none", "browser"}, // a typed URL: refused as well
		{"Sec-Fetch-Mode", "no-cors", "browser"},
		{"Sec-Fetch-Mode", "navigate", "browser"},
		{"Sec-Fetch-Dest", "empty", "browser"},
		{"Sec-Fetch-User", "?1", "browser"},
		{"sec-fetch-site", "cross-site", "browser"}, // any spelling: net/http canonicalises
		{"Via", "1.1 squid", "proxy"},
		{"Via", "HTTP/1.1 proxy.local:3128", "proxy"},
		{"X-Forwarded-For", "127.0.0.1", "proxy"},
		{"Forwarded", "for=127.0.0.1", "proxy"},
	}
	type route struct{ method, path string }
	routes := []route{
		{"GET", "/v1/credentials/" + testProfile},
		{"GET", "/v1/profiles"},
		{"GET", "/healthz"},
		{"GET", "/readyz"},
		{"GET", "/metrics"},
		{"POST", "/v1/profiles/" + testProfile + "/revoke"},
		{"PUT", imdsTokenPath},
		{"GET", imdsCredsPath + "/" + testProfile},
		{"GET", "/nope"},
	}
	for _, h := range headers {
		for _, value := range []string{h.value, ""} {
			for _, rt := range routes {
				t.Run(h.name+"="+value+" "+rt.method+" "+rt.path, func(t *testing.T) {
					keys := &fakeKeys{creds: testCreds()}
					s, logs := newTestServer(t, keys, func(o *Options) {
						o.IMDSProfile = testProfile
						o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("metrics served") })
					})
					r := request(rt.method, rt.path, "Authorization", testToken,
						"X-aws-ec2-metadata-token-ttl-seconds", "60", "X-aws-ec2-metadata-token", "x")
					r.Header[http.CanonicalHeaderKey(h.name)] = []string{value}
					rec := serve(s, r)
					msg := checkJSONError(t, rec, http.StatusForbidden, "Forbidden")
					if !strings.Contains(msg, h.reason) && !strings.Contains(msg, http.CanonicalHeaderKey(h.name)) {
						t.Errorf("message %q names neither the %s nor the header", msg, h.reason)
					}
					if keys.calls != 0 {
						t.Errorf("broker called %d times for a refused request", keys.calls)
					}
					got := logs.String()
					if !strings.Contains(got, `"level":"warn"`) || !strings.Contains(got, `"status":403`) {
						t.Errorf("refusal not logged at warn: %s", got)
					}
					if strings.Contains(got, testToken) {
						t.Errorf("logs contain the token: %s", got)
					}
				})
			}
		}
	}
}

// TestClientStyleRequestsPass sends requests shaped like those of the
// clients cwcreds serves (header sets as they send them) and wants each
// served, not refused by the guard.
func TestClientStyleRequestsPass(t *testing.T) {
	clients := []struct {
		name   string
		header []string
	}{
		{"aws-sdk-go-v2", []string{"Authorization", testToken, "Accept", "application/json",
			"User-Agent", "aws-sdk-go-v2/1.36.3 os/linux lang/go#1.26", "Amz-Sdk-Invocation-Id", "6d2a", "Amz-Sdk-Request", "attempt=1; max=3"}},
		{"botocore", []string{"Authorization", testToken, "Accept-Encoding", "identity", "User-Agent", "Boto3/1.43.11 md/Botocore#1.43.11 ua/2.1 os/linux"}},
		{"aws-sdk-js-v3", []string{"Authorization", testToken, "User-Agent", "aws-sdk-js/3.1173.0", "Connection", "keep-alive"}},
		{"curl", []string{"Authorization", testToken, "Accept", "*/*", "User-Agent", "curl/8.14.1"}},
		{"rclone", []string{"Authorization", testToken, "User-Agent", "rclone/v1.60.1", "Accept-Encoding", "gzip"}},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			s, _ := newTestServer(t, &fakeKeys{creds: testCreds()})
			rec := serve(s, request(http.MethodGet, "/v1/credentials/"+testProfile, c.header...))
			if rec.Code != http.StatusOK {
				t.Errorf("status = %d, want 200 (body %s)", rec.Code, rec.Body)
			}
		})
	}
}

// TestRefusedHeaderAllocs keeps the guard's header checks allocation-free.
func TestRefusedHeaderAllocs(t *testing.T) {
	h := http.Header{"Authorization": {testToken}, "User-Agent": {"curl/8"}, "Accept": {"*/*"}}
	if n := testing.AllocsPerRun(100, func() {
		if refusedHeader(h) != nil {
			t.Fatal("clean header refused")
		}
	}); n != 0 {
		t.Errorf("refusedHeader allocates %v times per call, want 0", n)
	}
}
