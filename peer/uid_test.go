package peer_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/peer"
	"github.com/cwcreds/cwcreds/server"
)

// envClient makes the test binary a tiny HTTP client: it GETs each URL in
// the variable (space-separated) with the client token from envToken and
// prints "URL STATUS" lines. The uid tests run it as other users.
const (
	envClient = "CWCREDS_PEER_TEST_CLIENT_URLS"
	envToken  = "CWCREDS_PEER_TEST_CLIENT_TOKEN"
)

func TestMain(m *testing.M) {
	if urls := os.Getenv(envClient); urls != "" {
		os.Exit(runClient(strings.Fields(urls), os.Getenv(envToken)))
	}
	os.Exit(m.Run())
}

func runClient(urls []string, token string) int {
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	for _, u := range urls {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", token)
		resp, err := c.Do(req)
		if err != nil {
			fmt.Printf("%s error:%v\n", u, err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Printf("%s %d\n", u, resp.StatusCode)
	}
	return 0
}

const testToken = "peer-test-client-token-0123456789abcdef"

type staticKeys struct{}

func (staticKeys) Get(context.Context, string) (*cwapi.Credentials, error) {
	return &cwapi.Credentials{AccessKeyID: "CWAKIDPEERTEST0001", SecretAccessKey: "secret",
		Expires: time.Now().Add(time.Hour)}, nil
}
func (staticKeys) Status() []broker.Status { return nil }

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ensureUser returns the uid and gid of a system user called name, creating
// it (and adding it to the supplementary groups) when it is missing.
func ensureUser(t *testing.T, name string, groups ...string) (uid, gid uint32) {
	t.Helper()
	for _, g := range groups {
		if _, err := user.LookupGroup(g); err != nil {
			if out, err := exec.Command("groupadd", "--system", g).CombinedOutput(); err != nil {
				t.Skipf("cannot create test group %s: %v %s", g, err, out)
			}
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		args := []string{"--system", "--no-create-home", "--shell", "/usr/sbin/nologin"}
		if len(groups) > 0 {
			args = append(args, "--groups", strings.Join(groups, ","))
		}
		if out, err := exec.Command("useradd", append(args, name)...).CombinedOutput(); err != nil {
			t.Skipf("cannot create test user %s: %v %s", name, err, out)
		}
		if u, err = user.Lookup(name); err != nil {
			t.Fatalf("user %s after useradd: %v", name, err)
		}
	} else if len(groups) > 0 {
		if out, err := exec.Command("usermod", "-aG", strings.Join(groups, ","), name).CombinedOutput(); err != nil {
			t.Skipf("cannot add %s to %v: %v %s", name, groups, err, out)
		}
	}
	id, _ := strconv.ParseUint(u.Uid, 10, 32)
	g, _ := strconv.ParseUint(u.Gid, 10, 32)
	return uint32(id), uint32(g)
}

// clientBinary copies the test binary where every user can run it.
func clientBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cwcreds-peer-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runAs runs the client binary as uid/gid (no supplementary groups) and
// returns the status it got for each URL.
func runAs(t *testing.T, bin string, uid, gid uint32, urls []string) map[string]string {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{envClient + "=" + strings.Join(urls, " "), envToken + "=" + testToken}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client as uid %d: %v", uid, err)
	}
	got := make(map[string]string)
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		u, status, _ := strings.Cut(sc.Text(), " ")
		got[u] = status
	}
	return got
}

// TestPeerUIDsWithRealProcesses runs clients as different users against a
// server whose profiles are restricted by uid and by gid, on IPv4, IPv6
// and a dual-stack listener reached over IPv4.
func TestPeerUIDsWithRealProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates test users (cwcreds-test-a, cwcreds-test-b) and runs clients as them; CI runs as root")
	}
	const group = "cwcreds-test-g"
	uidA, gidA := ensureUser(t, "cwcreds-test-a")
	uidB, gidB := ensureUser(t, "cwcreds-test-b", group)
	g, err := user.LookupGroup(group)
	if err != nil {
		t.Fatal(err)
	}
	gidG, _ := strconv.ParseUint(g.Gid, 10, 32)
	const strangerUID = 54321 // a uid with no user database entry

	logs := &lockedBuffer{}
	srv := server.New(zerolog.New(logs), staticKeys{}, server.Options{
		ClientTokens: map[string]string{"a-only": testToken, "group": testToken, "open": testToken},
		Access: map[string]server.Access{
			"a-only": {UIDs: []uint32{uidA}},
			"group":  {GIDs: []uint32{uint32(gidG)}},
		},
		Peers:        peer.Requests{},
		PeerIdentity: peer.Identity,
	})

	var bases []string
	for _, l := range []struct{ network, listen, dial string }{
		{"tcp4", "127.0.0.1:0", ""},
		{"tcp6", "[::1]:0", ""},
		{"tcp", "[::]:0", "127.0.0.1"}, // dual-stack: the server side sees ::ffff:127.0.0.1
	} {
		ln, err := net.Listen(l.network, l.listen)
		if err != nil {
			t.Logf("skipping %s %s: %v", l.network, l.listen, err)
			continue
		}
		hs := &http.Server{Handler: srv, ConnContext: peer.ConnContext}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
		addr := ln.Addr().String()
		if l.dial != "" {
			addr = net.JoinHostPort(l.dial, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		}
		bases = append(bases, "http://"+addr+"/v1/credentials/")
	}
	if len(bases) < 2 {
		t.Fatalf("only %d listeners", len(bases))
	}
	var urls []string
	for _, b := range bases {
		for _, p := range []string{"a-only", "group", "open"} {
			urls = append(urls, b+p)
		}
	}
	bin := clientBinary(t)
	want := map[string]map[string]string{ // user -> profile -> status
		"a":        {"a-only": "200", "group": "403", "open": "200"},
		"b":        {"a-only": "403", "group": "200", "open": "200"}, // b is in the group by the user database only
		"stranger": {"a-only": "403", "group": "403", "open": "200"},
		"root":     {"a-only": "403", "group": "403", "open": "200"},
	}
	runs := map[string]func() map[string]string{
		"a":        func() map[string]string { return runAs(t, bin, uidA, gidA, urls) },
		"b":        func() map[string]string { return runAs(t, bin, uidB, gidB, urls) },
		"stranger": func() map[string]string { return runAs(t, bin, strangerUID, strangerUID, urls) },
		"root":     func() map[string]string { return runAs(t, bin, 0, 0, urls) },
	}
	t.Logf("listeners: %v", bases)
	check := func(t *testing.T) {
		for who, run := range runs {
			got := run()
			for _, u := range urls {
				profile := u[strings.LastIndexByte(u, '/')+1:]
				if got[u] != want[who][profile] {
					t.Errorf("user %s GET %s: %q, want %s", who, u, got[u], want[who][profile])
				}
			}
		}
	}
	t.Run("netlink", check)
	t.Run("proc", func(t *testing.T) {
		defer peer.UseProcOnly()()
		check(t)
	})
	l := logs.String()
	if !strings.Contains(l, fmt.Sprintf(`"peer_uid":%d`, uidA)) || !strings.Contains(l, fmt.Sprintf(`"peer_uid":%d`, strangerUID)) {
		t.Errorf("logs lack the peers' uids:\n%s", l)
	}
}

// BenchmarkRestrictedRequest measures a credential request for a
// uid-restricted profile over loopback HTTP, against an unrestricted one:
// keep-alive pays the lookup once per connection; new-conn pays it on
// every request.
func BenchmarkRestrictedRequest(b *testing.B) {
	uid := uint32(os.Getuid())
	srv := server.New(zerolog.Nop(), staticKeys{}, server.Options{
		ClientTokens: map[string]string{"restricted": testToken, "open": testToken},
		Access:       map[string]server.Access{"restricted": {UIDs: []uint32{uid}}},
		Peers:        peer.Requests{},
		PeerIdentity: peer.Identity,
	})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ConnContext: peer.ConnContext}
	go hs.Serve(ln)
	defer hs.Close()
	for _, tc := range []struct {
		name      string
		profile   string
		keepAlive bool
	}{
		{"open/keep-alive", "open", true},
		{"restricted/keep-alive", "restricted", true},
		{"open/new-conn", "open", false},
		{"restricted/new-conn", "restricted", false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tr := &http.Transport{Proxy: nil, DisableKeepAlives: !tc.keepAlive}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/credentials/"+tc.profile, nil)
			req.Header.Set("Authorization", testToken)
			for b.Loop() {
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
