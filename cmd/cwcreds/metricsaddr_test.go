package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cwcreds/cwcreds/config"
)

// startMetricsDaemon restarts startDaemon's daemon with
// CWCREDS_METRICS_LISTEN_ADDR=127.0.0.1:0 set in its environment, and
// returns it with the metrics listener's address.
func startMetricsDaemon(t *testing.T) (d *daemon, metricsAddr string) {
	t.Helper()
	d = startDaemon(t)
	d.stop()
	d.stop = nil
	t.Setenv("CWCREDS_METRICS_LISTEN_ADDR", "127.0.0.1:0")
	cfg, err := config.Load(os.Environ())
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	d.cfg = cfg
	d.run(t, serveHooks{metricsReady: func(a net.Addr) { metricsAddr = a.String() }})
	if metricsAddr == "" || metricsAddr == d.addr {
		t.Fatalf("metrics listener on %q, credential listener on %q: want a listener of its own", metricsAddr, d.addr)
	}
	return d, metricsAddr
}

// call sends method path to addr with the given headers, and returns the
// status, the body and the Allow header.
func call(t *testing.T, method, addr, path string, header ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if len(header) > 0 && header[0] == "Host" {
		req.Host = header[1]
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Allow")
}

// TestMetricsListener: with CWCREDS_METRICS_LISTEN_ADDR the daemon serves
// the same registry's /metrics, /healthz and /readyz there, and nothing
// else: a credential request with a valid client token, the status page
// and revoke (with the admin token) are 404 there, and HEAD and POST are
// refused. The credential listener still serves everything, /metrics
// included. Stopping the daemon closes both.
func TestMetricsListener(t *testing.T) {
	d, maddr := startMetricsDaemon(t)

	// The credential listener, as before.
	d.warm(t)
	for _, path := range []string{"/v1/profiles", "/metrics", "/healthz", "/readyz"} {
		if code, body, _ := call(t, http.MethodGet, d.addr, path); code != http.StatusOK {
			t.Errorf("GET %s on the credential listener = %d %s, want 200", path, code, body)
		}
	}

	// The metrics listener: the one registry, with the traffic above.
	code, out, _ := call(t, http.MethodGet, maddr, "/metrics")
	if code != http.StatusOK || !strings.Contains(out, `cwcreds_credential_requests_total{outcome="ok",profile="train"} 1`) ||
		!strings.Contains(out, `cwcreds_profile_healthy{profile="wif"} 1`) {
		t.Errorf("GET /metrics on the metrics listener = %d, want 200 with the daemon's metrics:\n%s", code, out)
	}
	for _, secret := range valuesOf(d.tokens) {
		if secret != "" && strings.Contains(out, secret) {
			t.Errorf("/metrics holds a client token")
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body, _ := call(t, http.MethodGet, maddr, path); code != http.StatusOK {
			t.Errorf("GET %s on the metrics listener = %d %s, want 200", path, code, body)
		}
	}
	// No Host guard there: a scraper naming the node by DNS is answered.
	if code, _, _ := call(t, http.MethodGet, maddr, "/metrics", "Host", "gpu-node-7.cluster.example:7913"); code != http.StatusOK {
		t.Errorf("GET /metrics with a DNS Host = %d, want 200", code)
	}

	admin, err := os.ReadFile(adminTokenPath(d.cfg.RuntimeDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		header       []string
	}{
		{http.MethodGet, "/v1/credentials/train", []string{"Authorization", d.tokens["train"]}},
		{http.MethodGet, "/v1/credentials/x", nil},
		{http.MethodGet, "/v1/profiles", nil},
		{http.MethodPost, "/v1/profiles/train/revoke", []string{"Authorization", strings.TrimSpace(string(admin))}},
		{http.MethodPut, "/latest/api/token", []string{"X-aws-ec2-metadata-token-ttl-seconds", "60"}},
		{http.MethodGet, "/", nil},
	} {
		code, body, _ := call(t, tc.method, maddr, tc.path, tc.header...)
		var e struct{ Code, Message string }
		if code != http.StatusNotFound || json.Unmarshal([]byte(body), &e) != nil || e.Code != "NotFound" {
			t.Errorf("%s %s on the metrics listener = %d %s, want 404 NotFound", tc.method, tc.path, code, body)
		}
		if strings.Contains(body, "SecretAccessKey") {
			t.Errorf("%s %s on the metrics listener served a key", tc.method, tc.path)
		}
	}
	for _, m := range []string{http.MethodHead, http.MethodPost} {
		if code, _, allow := call(t, m, maddr, "/metrics"); code != http.StatusMethodNotAllowed || allow != http.MethodGet {
			t.Errorf("%s /metrics on the metrics listener = %d (Allow %q), want 405 with Allow: GET", m, code, allow)
		}
	}
	// Nothing above reached the broker: one key per profile was served,
	// by the credential listener.
	_, out, _ = call(t, http.MethodGet, maddr, "/metrics")
	if !strings.Contains(out, `cwcreds_credential_requests_total{outcome="ok",profile="train"} 1`) ||
		!strings.Contains(out, `cwcreds_credential_requests_total{outcome="unknown_profile",profile="_unknown"} 0`) ||
		!strings.Contains(out, `cwcreds_credential_requests_total{outcome="unauthorized",profile="_unknown"} 0`) {
		t.Errorf("requests to the metrics listener were counted as credential requests:\n%s", grepLines(out, "cwcreds_credential_requests_total"))
	}
	if !strings.Contains(d.logs.String(), `"metrics_listen":"`+maddr+`"`) {
		t.Errorf("the start-up line does not name the metrics listener %s", maddr)
	}

	d.stop()
	d.stop = nil
	for _, a := range []string{maddr, d.addr} {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the daemon stopped", a)
		}
	}
}

func grepLines(s, substr string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// TestMetricsListenerWithSocketActivation: the credential listener comes
// from systemd, the metrics listener is the daemon's own plain bind.
func TestMetricsListenerWithSocketActivation(t *testing.T) {
	d := startDaemon(t)
	d.stop()
	d.stop = nil
	sock := newSystemdSocket(t)
	d.cfg.ListenAddr = sock.ln.Addr().String()
	d.cfg.MetricsListenAddr = "127.0.0.1:0"
	var maddr string
	d.run(t, serveHooks{inherited: sock.pass(t), metricsReady: func(a net.Addr) { maddr = a.String() }})
	if d.addr != sock.ln.Addr().String() {
		t.Fatalf("credential listener on %s, want the passed socket %s", d.addr, sock.ln.Addr())
	}
	if code, body := d.get(t, "train", d.tokens["train"]); code != http.StatusOK {
		t.Errorf("GET through the passed socket = %d %v", code, body)
	}
	if code, _, _ := call(t, http.MethodGet, maddr, "/metrics"); code != http.StatusOK {
		t.Errorf("GET /metrics on the metrics listener = %d, want 200", code)
	}
	d.stop()
	d.stop = nil // every run's cleanup calls d.stop
}

// TestMetricsListenerBindFails: a metrics address the daemon cannot bind
// stops it at start with an error naming the variable and the fix, and
// releases the credential listener it had bound.
func TestMetricsListenerBindFails(t *testing.T) {
	d := startDaemon(t)
	d.stop()
	d.stop = nil
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mainAddr := free.Addr().String()
	free.Close()
	d.cfg.ListenAddr, d.cfg.MetricsListenAddr = mainAddr, taken.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = serveWith(ctx, d.cfg, d.logs, serveHooks{ready: func(net.Addr, map[string]string) {
		t.Error("the daemon served although its metrics address is taken")
	}})
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("serve = %v, want EADDRINUSE", err)
	}
	for _, want := range []string{"CWCREDS_METRICS_LISTEN_ADDR", taken.Addr().String(), "choose another port"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	ln, err := net.Listen("tcp", mainAddr)
	if err != nil {
		t.Fatalf("the credential address %s is still held after the failed start: %v", mainAddr, err)
	}
	ln.Close()
}
