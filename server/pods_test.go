package server

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// Who may use what from a pod (issue 15), on a real HTTP server whose
// connections carry the addresses a pod's connection to the node's pod
// identity address would: the test rewrites each accepted connection's
// local and remote address, the only things that differ from a loopback
// client, so every byte still crosses a real socket and net/http.

// addrListener accepts real connections and presents them as made from
// remote to local.
type addrListener struct {
	net.Listener
	local, remote netip.AddrPort
}

func (l addrListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return addrConn{c, net.TCPAddrFromAddrPort(l.local), net.TCPAddrFromAddrPort(l.remote)}, nil
}

type addrConn struct {
	net.Conn
	local, remote net.Addr
}

func (c addrConn) LocalAddr() net.Addr  { return c.local }
func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// Addresses of the pod scenario: a pod on the pod network calls the
// node's pod identity address.
var (
	podIdentity = netip.MustParseAddrPort("169.254.170.23:7911")
	podPeer     = netip.MustParseAddrPort("10.244.3.17:51234")
	nodeLocal   = netip.MustParseAddrPort("127.0.0.1:7911")
	nodePeer    = netip.MustParseAddrPort("127.0.0.1:40000")
)

// The profiles of the scenario and their tokens.
var podProfiles = map[string]string{
	"work":     "work-token", // stands for workload-oidc: cmd/cwcreds sets Pods for it
	"ops":      "ops-token",  // an operator profile without ALLOW_PODS
	"ops-pods": "pods-token", // an operator profile with ALLOW_PODS=true
	"uids":     "uids-token", // restricted to a local user; Pods set to show it still never reaches pods
}

// podServer serves the scenario over a real listener whose connections
// look made from remote to local; the logs are at info, as the daemon's.
func podServer(t *testing.T, local, remote netip.AddrPort, opts ...func(*Options)) (url string, logs *syncBuffer) {
	t.Helper()
	logs = &syncBuffer{}
	o := Options{
		ClientTokens: podProfiles,
		Access: map[string]Access{
			"work":     {Pods: true},
			"ops-pods": {Pods: true},
			"uids":     {UIDs: []uint32{uint32(os.Getuid())}, Pods: true},
		},
		Peers:       realUIDFakeGroups{&switchableGroups{}},
		IMDSProfile: "ops-pods",
	}
	for _, fn := range opts {
		fn(&o)
	}
	s := New(zerolog.New(logs).Level(zerolog.InfoLevel), &fakeKeys{creds: testCreds()}, o)
	ts := httptest.NewUnstartedServer(s)
	ts.Listener = addrListener{ts.Listener, local, remote}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts.URL, logs
}

// podGet sends method path to url with Host host and the given
// Authorization (none when ""), and returns the status and error code.
func podGet(t *testing.T, method, url, path, host, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if method == http.MethodPut {
		req.Header.Set(hdrIMDSTTL, "60")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e errorBody
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode >= 400 && (e.Code == "" || e.Message == "") {
		t.Errorf("%s %s: status %d without the JSON error body: %q", method, path, resp.StatusCode, body)
	}
	return resp.StatusCode, e.Code
}

func TestPodsGetOnlyWhatAllowsThem(t *testing.T) {
	url, logs := podServer(t, podIdentity, podPeer)
	host := podIdentity.String()
	for _, tc := range []struct {
		name, method, path, auth string
		want                     int
	}{
		{"workload profile", "GET", credentialsPrefix + "work", "work-token", 200},
		{"operator profile with ALLOW_PODS", "GET", credentialsPrefix + "ops-pods", "pods-token", 200},
		{"operator profile without ALLOW_PODS", "GET", credentialsPrefix + "ops", "ops-token", 403},
		{"uid-restricted profile", "GET", credentialsPrefix + "uids", "uids-token", 403},
		{"wrong token still 401", "GET", credentialsPrefix + "ops-pods", "ops-token", 401},
		{"IMDS session token", "PUT", imdsTokenPath, "", 403},
		{"IMDS role", "GET", imdsCredsPath + "/ops-pods", "", 403},
		{"status page", "GET", "/v1/profiles", "", 403},
		{"revoke", "POST", "/v1/profiles/ops-pods/revoke", "", 403},
		{"liveness", "GET", "/healthz", "", 200},
	} {
		if got, code := podGet(t, tc.method, url, tc.path, host, tc.auth); got != tc.want || (got == 403 && code != codeForbidden) {
			t.Errorf("%s from a pod: %d %s, want %d", tc.name, got, code, tc.want)
		}
	}
	// The refusals are in the audit trail, with the pod's address and why.
	var reasons []string
	for _, l := range logLines(t, logs) {
		if l["event"] == "credential_refusal" && l["outcome"] == "forbidden" {
			if l["peer"] != "address "+podPeer.Addr().String() {
				t.Errorf("refusal line %v: want the pod's address as peer", l)
			}
			profile, _ := l["profile"].(string)
			reason, _ := l["reason"].(string)
			reasons = append(reasons, profile+": "+reason)
		}
	}
	for _, want := range []string{"ops: profile not served to pods", "uids: profile not served to pods", ": request refused: endpoint answers loopback only"} {
		if !strings.Contains(strings.Join(reasons, "\n"), want) {
			t.Errorf("audit refusals %q lack %q", reasons, want)
		}
	}
}

// The same server on loopback serves every profile to the node's own
// processes, as before: the rules above apply to peers beyond loopback
// only.
func TestLoopbackPeersUnchanged(t *testing.T) {
	url, _ := podServer(t, nodeLocal, nodePeer)
	for name, tok := range podProfiles {
		if name == "uids" {
			continue // its local-user check is access_test.go's
		}
		if got, _ := podGet(t, "GET", url, credentialsPrefix+name, "127.0.0.1:7911", tok); got != 200 {
			t.Errorf("profile %s on loopback: %d, want 200", name, got)
		}
	}
	if got, _ := podGet(t, "PUT", url, imdsTokenPath, "localhost", ""); got != 200 {
		t.Errorf("IMDS token on loopback: %d, want 200", got)
	}
}

// The Host guard, per listener: a connection made to a pod identity
// address must name exactly that address; one made to loopback, a
// loopback address or localhost. CWCREDS_ALLOW_NON_LOOPBACK widens
// neither.
func TestHostGuardPerListener(t *testing.T) {
	v6 := netip.MustParseAddrPort("[fd00:ec2::23]:7911")
	for _, tc := range []struct {
		name          string
		local, remote netip.AddrPort
		anyIP         bool
		host          string
		want          int
	}{
		{"pod address", podIdentity, podPeer, false, "169.254.170.23:7911", 200},
		{"pod address without port", podIdentity, podPeer, false, "169.254.170.23", 200},
		{"pod address, loopback Host", podIdentity, podPeer, false, "127.0.0.1:7911", 403},
		{"pod address, localhost", podIdentity, podPeer, false, "localhost:7911", 403},
		{"pod address, the other pod address", podIdentity, podPeer, false, "[fd00:ec2::23]:7911", 403},
		{"pod address, a name", podIdentity, podPeer, false, "attacker.example:7911", 403},
		{"pod address, another IP even with ALLOW_NON_LOOPBACK", podIdentity, podPeer, true, "10.0.0.1:7911", 403},
		{"v6 pod address", v6, netip.MustParseAddrPort("[fd00:10:244::5]:4000"), false, "[fd00:ec2::23]:7911", 200},
		{"v6 pod address, v4 Host", v6, netip.MustParseAddrPort("[fd00:10:244::5]:4000"), false, "169.254.170.23:7911", 403},
		{"loopback, localhost", nodeLocal, nodePeer, false, "localhost:7911", 200},
		{"loopback, pod address Host", nodeLocal, nodePeer, false, "169.254.170.23:7911", 403},
		{"loopback, any IP even with ALLOW_NON_LOOPBACK", nodeLocal, nodePeer, true, "10.0.0.1:7911", 403},
		{"node address, itself", netip.MustParseAddrPort("10.0.0.5:7911"), podPeer, true, "10.0.0.5:7911", 200},
		{"node address, any IP with ALLOW_NON_LOOPBACK", netip.MustParseAddrPort("10.0.0.5:7911"), podPeer, true, "192.0.2.9", 200},
		{"node address, localhost", netip.MustParseAddrPort("10.0.0.5:7911"), podPeer, true, "localhost", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, _ := podServer(t, tc.local, tc.remote, func(o *Options) { o.AllowNonLoopbackHosts = tc.anyIP })
			if got, _ := podGet(t, "GET", url, credentialsPrefix+"work", tc.host, "work-token"); got != tc.want {
				t.Errorf("Host %q on %s: %d, want %d", tc.host, tc.local, got, tc.want)
			}
		})
	}
}

func TestLoopbackPeer(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:40000": true, "127.9.8.7:1": true, "[::1]:2": true, "[::ffff:127.0.0.1]:3": true,
		"10.244.3.17:51234": false, "169.254.170.23:1": false, "[fd00:ec2::23]:1": false, "": false, "pipe": false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = addr
		if got := loopbackPeer(r); got != want {
			t.Errorf("loopbackPeer(%q) = %v, want %v", addr, got, want)
		}
	}
}
