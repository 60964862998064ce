package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// execMainVar makes the test binary run main instead of the tests, so a
// test can start the real daemon as a child process and signal it. (Not
// CWCREDS_*: the daemon refuses unknown variables with that prefix.)
const execMainVar = "GO_CWCREDS_TEST_EXEC_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(execMainVar) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// gatedUpstream holds every minting request until released, while armed.
type gatedUpstream struct {
	next    http.Handler
	mu      sync.Mutex
	armed   bool
	arrived chan struct{} // closed by the first held request
	release chan struct{}
}

func (g *gatedUpstream) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed, g.arrived, g.release = true, make(chan struct{}), make(chan struct{})
}

func (g *gatedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	armed, arrived, release := g.armed, g.arrived, g.release
	if armed && r.Method == http.MethodPost {
		select {
		case <-arrived:
		default:
			close(arrived)
		}
	}
	g.mu.Unlock()
	if armed && r.Method == http.MethodPost {
		<-release
	}
	g.next.ServeHTTP(w, r)
}

// TestSignalsReloadAndDrain runs the real binary as a child process: SIGHUP
// applies a changed env file; SIGTERM, with requests waiting on a mint,
// closes the listener, answers every one of them and exits 0.
func TestSignalsReloadAndDrain(t *testing.T) {
	dir := t.TempDir()
	var gate *gatedUpstream
	apiURL, tokenFile, _ := apiTokenUpstream(t, dir, func(h http.Handler) http.Handler {
		gate = &gatedUpstream{next: h}
		return gate
	})
	runDir := filepath.Join(dir, "run")
	envFile := filepath.Join(dir, "cwcreds.env")
	writeEnv := envFileWriter(t, envFile, apiURL, runDir, tokenFile)
	writeEnv("", "a")

	cmd := exec.Command(os.Args[0], "serve")
	cmd.Env = []string{execMainVar + "=1", "CWCREDS_ENV_FILE=" + envFile, "PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited delivers Wait's result once; waited is closed after it.
	exited := make(chan error, 1)
	waited := make(chan struct{})
	var logs syncBuffer
	go func() {
		io.Copy(&logs, stderr) // until the child closes stderr, which Wait needs first
		exited <- cmd.Wait()
		close(waited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // after a passing test it has already exited
		<-waited
	})

	addr := waitLogField(t, &logs, "cwcreds serving", "listen")
	base := "http://" + addr
	get := func(profile string) (int, string) {
		tok := readTrimmed(t, filepath.Join(runDir, profile+".token"))
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/credentials/"+profile, nil)
		req.Header.Set("Authorization", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("a"); code != http.StatusOK {
		t.Fatalf("GET a = %d %s", code, body)
	}

	// SIGHUP: profile b appears; its warm-up mint is held upstream.
	gate.arm()
	writeEnv("", "a", "b")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.arrived:
	case <-time.After(10 * time.Second):
		t.Fatalf("no mint for the reloaded profile b within 10s; logs:\n%s", logs.String())
	}

	// Clients of b wait on that mint.
	const clients = 8
	type result struct {
		code int
		body string
	}
	results := make(chan result, clients)
	for range clients {
		go func() {
			code, body := get("b")
			results <- result{code, body}
		}()
	}
	waitMetric(t, base, `cwcreds_cache_requests_total{profile="b",result="miss"}`, clients)

	// SIGTERM while they wait: the listener closes at once, the waiting
	// requests stay.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts connections 10s after SIGTERM")
		}
		time.Sleep(5 * time.Millisecond) // polling for the listener to close, bounded
	}
	select {
	case err := <-exited:
		t.Fatalf("the daemon exited (%v) with %d requests in flight", err, clients)
	default:
	}

	released := time.Now()
	close(gate.release)
	var keyIDs = map[string]bool{}
	for range clients {
		r := <-results
		if r.code != http.StatusOK {
			t.Errorf("in-flight request at SIGTERM: %d %s", r.code, r.body)
			continue
		}
		var body struct{ AccessKeyId string }
		json.Unmarshal([]byte(r.body), &body)
		keyIDs[body.AccessKeyId] = true
	}
	if len(keyIDs) > 1 {
		t.Errorf("the waiting clients got %d different keys, want one", len(keyIDs))
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0; logs:\n%s", err, logs.String())
		}
		if took := time.Since(released); took > 5*time.Second {
			t.Errorf("exit took %v after the last request could finish", took)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("no exit within %v of SIGTERM", shutdownTimeout+5*time.Second)
	}
	for _, want := range []string{`"event":"reloaded"`, "shutting down: draining requests", `"stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s", want)
		}
	}
}

// waitLogField waits (bounded) for a JSON log line with message msg and
// returns its field.
func waitLogField(t *testing.T, logs *syncBuffer, msg, field string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == msg {
				if v, ok := m[field].(string); ok {
					return v
				}
			}
		}
		time.Sleep(5 * time.Millisecond) // polling the child's log, bounded
	}
	t.Fatalf("no %q log line within 15s; logs:\n%s", msg, logs.String())
	return ""
}

// waitMetric waits (bounded) until the /metrics sample named series reaches
// at least want.
func waitMetric(t *testing.T, base, series string, want float64) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			if m := re.FindStringSubmatch(last); m != nil {
				if v, _ := strconv.ParseFloat(m[1], 64); v >= want {
					return
				}
			}
		}
		time.Sleep(5 * time.Millisecond) // polling the daemon's counters, bounded
	}
	t.Fatalf("%s did not reach %v within 10s", series, want)
}
