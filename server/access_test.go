package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/peer"
)

// fakePeers answers every request with one uid and its groups, counting
// lookups.
type fakePeers struct {
	uid     uint32
	gids    []uint32
	uidErr  error
	gidErr  error
	uidN    atomic.Int32
	groupsN atomic.Int32
}

func (f *fakePeers) PeerUID(*http.Request) (uint32, error) {
	f.uidN.Add(1)
	return f.uid, f.uidErr
}

func (f *fakePeers) Groups(uint32) ([]uint32, error) {
	f.groupsN.Add(1)
	return f.gids, f.gidErr
}

func TestAccess(t *testing.T) {
	tests := []struct {
		name   string
		access Access
		peers  *fakePeers // nil: Options.Peers unset
		token  string
		status int
		msg    string
	}{
		{"uid allowed", Access{UIDs: []uint32{1000, 1001}}, &fakePeers{uid: 1001}, testToken, 200, ""},
		{"uid refused despite the right token", Access{UIDs: []uint32{1000}}, &fakePeers{uid: 1001, gids: []uint32{1000}}, testToken, 403, "not one of them"},
		{"uid refused before the token is looked at", Access{UIDs: []uint32{1000}}, &fakePeers{uid: 1001}, "", 403, "not one of them"},
		{"uid allowed, wrong token", Access{UIDs: []uint32{1000}}, &fakePeers{uid: 1000}, "wrong", 401, ""},
		{"gid allowed", Access{GIDs: []uint32{2000}}, &fakePeers{uid: 1001, gids: []uint32{100, 2000}}, testToken, 200, ""},
		{"gid refused", Access{GIDs: []uint32{2000}}, &fakePeers{uid: 1001, gids: []uint32{100}}, testToken, 403, "not one of them"},
		{"uid or gid", Access{UIDs: []uint32{5}, GIDs: []uint32{2000}}, &fakePeers{uid: 1001, gids: []uint32{2000}}, testToken, 200, ""},
		{"unknown peer", Access{UIDs: []uint32{0}}, &fakePeers{uidErr: errors.New("no such socket")}, testToken, 403, "could not be identified"},
		{"groups unknown", Access{GIDs: []uint32{0}}, &fakePeers{uid: 7, gidErr: errors.New("no user")}, testToken, 403, "could not be identified"},
		{"no Peers", Access{UIDs: []uint32{0}}, nil, testToken, 403, "could not be identified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqs := &countingRequests{}
			s, logs := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
				o.Access = map[string]Access{testProfile: tt.access}
				o.Requests = reqs
				if tt.peers != nil {
					o.Peers = tt.peers
				}
			})
			rec := serve(s, credsRequest(testProfile, tt.token))
			if tt.status != 200 {
				msg := checkJSONError(t, rec, tt.status, map[int]string{401: codeUnauthorized, 403: codeForbidden}[tt.status])
				if !strings.Contains(msg, tt.msg) {
					t.Errorf("message %q lacks %q", msg, tt.msg)
				}
			} else if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if tt.status == 403 {
				if reqs.counts[testProfile+"/forbidden"] != 1 {
					t.Errorf("counts = %v, want one forbidden", reqs.counts)
				}
				l := logs.String()
				if !strings.Contains(l, `"level":"warn"`) || !strings.Contains(l, `"profile":"default"`) {
					t.Errorf("no warn line naming the profile:\n%s", l)
				}
				if tt.peers != nil && tt.peers.uidErr == nil && !strings.Contains(l, `"peer_uid":`) {
					t.Errorf("refusal log lacks peer_uid:\n%s", l)
				}
				if strings.Contains(l, testToken) || strings.Contains(rec.Body.String(), testToken) {
					t.Error("the client token leaked into a log or body")
				}
			}
		})
	}
}

// A profile without Access never asks who the peer is, even when another
// profile is restricted.
func TestAccessUnrestrictedPaysNothing(t *testing.T) {
	peers := &fakePeers{uid: 1}
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
		o.ClientTokens["open"] = testToken + "x"
		o.Access = map[string]Access{"open": {}, testProfile: {UIDs: []uint32{1}}}
		o.Peers = peers
	})
	for range 3 {
		if rec := serve(s, credsRequest("open", testToken+"x")); rec.Code != 200 {
			t.Fatalf("open profile: %d %s", rec.Code, rec.Body)
		}
	}
	if n := peers.uidN.Load() + peers.groupsN.Load(); n != 0 {
		t.Errorf("unrestricted requests made %d peer lookups", n)
	}
	// Groups are read only when the uid alone does not decide.
	serve(s, credsRequest(testProfile, testToken))
	if peers.uidN.Load() != 1 || peers.groupsN.Load() != 0 {
		t.Errorf("uid match: %d uid and %d group lookups, want 1 and 0", peers.uidN.Load(), peers.groupsN.Load())
	}
}

// ALLOWED_UIDS holds for the profile's IMDS role too.
func TestAccessIMDS(t *testing.T) {
	for _, tc := range []struct {
		uid    uint32
		status int
	}{{1000, 200}, {1001, 403}} {
		s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
			o.IMDSProfile = testProfile
			o.Access = map[string]Access{testProfile: {UIDs: []uint32{1000}}}
			o.Peers = &fakePeers{uid: tc.uid}
		})
		tok := imdsToken(t, s, "60")
		rec := serve(s, request(http.MethodGet, imdsCredsPath+"/"+testProfile, "X-aws-ec2-metadata-token", tok))
		if rec.Code != tc.status {
			t.Errorf("uid %d: IMDS role status %d, want %d (%s)", tc.uid, rec.Code, tc.status, rec.Body)
		}
	}
}

// The audit line omits peer_pid when only the uid is known.
func TestAuditPeerWithoutPID(t *testing.T) {
	s, logs := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
		o.PeerIdentity = func(*http.Request) (int, int, bool) { return 1234, 0, true }
	})
	serve(s, credsRequest(testProfile, testToken))
	if l := logs.String(); !strings.Contains(l, `"peer_uid":1234`) || strings.Contains(l, "peer_pid") {
		t.Errorf("audit line: %s", l)
	}
}

// switchableGroups is a Peers whose uid is fixed and whose user's groups
// the test changes, as `gpasswd -d` would; it counts group lookups.
type switchableGroups struct {
	uid     uint32
	mu      sync.Mutex
	gids    []uint32
	lookups int
	during  func() // called inside each lookup, when set
}

func (p *switchableGroups) PeerUID(*http.Request) (uint32, error) { return p.uid, nil }

func (p *switchableGroups) Groups(uint32) ([]uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lookups++
	if p.during != nil {
		p.during()
	}
	return slices.Clone(p.gids), nil
}

func (p *switchableGroups) set(gids ...uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gids = gids
}

// TestAccessGroupRemovalBoundedByTTL reproduces finding 7: a user removed
// from the allowed group kept access on a kept-alive connection for as long
// as the connection lived. Now the group list is trusted for GroupsTTL at
// most: the first request after it is refused.
func TestAccessGroupRemovalBoundedByTTL(t *testing.T) {
	peers := &switchableGroups{uid: 1001, gids: []uint32{100, 2000}}
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
		o.Access = map[string]Access{testProfile: {GIDs: []uint32{2000}}}
		o.Peers = peers
	})
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	status := func() int { return serve(s, credsRequest(testProfile, testToken)).Code }

	if got := status(); got != 200 {
		t.Fatalf("member: status %d, want 200", got)
	}
	peers.set(100) // removed from group 2000
	now = now.Add(GroupsTTL - time.Nanosecond)
	if got := status(); got != 200 {
		t.Errorf("just inside the TTL: status %d, want 200 (the cached answer)", got)
	}
	if peers.lookups != 1 {
		t.Errorf("%d group lookups inside the TTL, want 1", peers.lookups)
	}
	now = now.Add(time.Nanosecond)
	if got := status(); got != 403 {
		t.Errorf("removed from the group, GroupsTTL later: status %d, want 403", got)
	}
	peers.set(100, 2000) // added back: also noticed within the TTL
	now = now.Add(GroupsTTL)
	if got := status(); got != 200 {
		t.Errorf("added back, GroupsTTL later: status %d, want 200", got)
	}
	// A clock stepped back does not extend trust.
	peers.set(100)
	now = now.Add(-time.Hour)
	if got := status(); got != 403 {
		t.Errorf("clock stepped back: status %d, want 403 (looked up again)", got)
	}
}

// TestAccessGroupRecheckedAtReload: a reload (SetProfiles, even with the
// same profiles, or RecheckAccess for a reload that changed nothing) makes
// the very next request look the groups up again.
func TestAccessGroupRecheckedAtReload(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reload func(*Server)
	}{
		{"SetProfiles unchanged", func(s *Server) {
			s.SetProfiles(map[string]string{testProfile: testToken}, map[string]Access{testProfile: {GIDs: []uint32{2000}}})
		}},
		{"RecheckAccess", (*Server).RecheckAccess},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peers := &switchableGroups{uid: 1001, gids: []uint32{2000}}
			s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
				o.Access = map[string]Access{testProfile: {GIDs: []uint32{2000}}}
				o.Peers = peers
			})
			now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			s.now = func() time.Time { return now } // frozen: only the reload can expire the answer
			if rec := serve(s, credsRequest(testProfile, testToken)); rec.Code != 200 {
				t.Fatalf("member: %d %s", rec.Code, rec.Body)
			}
			peers.set(100)
			tc.reload(s)
			if rec := serve(s, credsRequest(testProfile, testToken)); rec.Code != 403 {
				t.Errorf("after the reload: status %d, want 403", rec.Code)
			}
		})
	}
}

// A lookup that overlaps a reload is not trusted afterwards: it may have
// read the membership from before the change the reload was for.
func TestAccessGroupLookupOverlappingReload(t *testing.T) {
	peers := &switchableGroups{uid: 1001, gids: []uint32{2000}}
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
		o.Access = map[string]Access{testProfile: {GIDs: []uint32{2000}}}
		o.Peers = peers
	})
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	peers.during = func() { s.RecheckAccess(); peers.during = nil }
	serve(s, credsRequest(testProfile, testToken))
	peers.gids = []uint32{100}
	if rec := serve(s, credsRequest(testProfile, testToken)); rec.Code != 403 || peers.lookups != 2 {
		t.Errorf("status %d after %d lookups, want 403 after 2", rec.Code, peers.lookups)
	}
}

// TestAccessGroupRemovalKeptAliveConnection is finding 7 end to end, over
// one real kept-alive loopback connection whose uid package peer finds in
// the kernel: the user leaves the group, and once GroupsTTL has passed the
// same connection is refused.
func TestAccessGroupRemovalKeptAliveConnection(t *testing.T) {
	groups := &switchableGroups{uid: uint32(os.Getuid()), gids: []uint32{2000}}
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
		o.Access = map[string]Access{testProfile: {GIDs: []uint32{2000}}}
		o.Peers = realUIDFakeGroups{groups}
	})
	var mu sync.Mutex
	now := time.Now()
	s.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ts := httptest.NewUnstartedServer(s)
	ts.Config.ConnContext = peer.ConnContext
	ts.Start()
	t.Cleanup(ts.Close)

	var conns []string
	get := func() int {
		t.Helper()
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conns = append(conns, i.Conn.LocalAddr().String()) }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			http.MethodGet, ts.URL+credentialsPrefix+testProfile, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = testHost
		req.Header.Set("Authorization", testToken)
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(); got != 200 {
		t.Fatalf("member: status %d", got)
	}
	groups.set(100)
	if got := get(); got != 200 {
		t.Fatalf("within the TTL: status %d, want 200", got)
	}
	mu.Lock()
	now = now.Add(GroupsTTL)
	mu.Unlock()
	if got := get(); got != 403 {
		t.Errorf("removed from the group, GroupsTTL later, same connection: status %d, want 403", got)
	}
	if len(conns) != 3 || conns[1] != conns[0] || conns[2] != conns[0] {
		t.Errorf("requests used connections %v, want one kept alive", conns)
	}
}

// realUIDFakeGroups finds the uid with package peer and the groups with a
// fake.
type realUIDFakeGroups struct{ g *switchableGroups }

func (p realUIDFakeGroups) PeerUID(r *http.Request) (uint32, error) {
	return peer.Requests{}.PeerUID(r)
}
func (p realUIDFakeGroups) Groups(uid uint32) ([]uint32, error) { return p.g.Groups(uid) }

// The group cache stays bounded however many uids ask (each local user,
// container uids included), and errors are cached like answers, so a uid
// the user database does not know costs one lookup per GroupsTTL.
func TestGroupCacheBounded(t *testing.T) {
	var c groupCache
	peers := &switchableGroups{gids: []uint32{1}}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for uid := range uint32(3 * maxGroupEntries) {
		c.groups(peers, uid, now)
	}
	n := 0
	c.m.Range(func(any, any) bool { n++; return true })
	if n > maxGroupEntries {
		t.Errorf("cache holds %d entries, want at most %d", n, maxGroupEntries)
	}
	failing := &fakePeers{gidErr: errors.New("unknown uid")}
	for range 3 {
		if _, err := c.groups(failing, 99999, now); err == nil {
			t.Fatal("the lookup error was lost")
		}
	}
	if got := failing.groupsN.Load(); got != 1 {
		t.Errorf("%d lookups for an unknown uid within the TTL, want 1", got)
	}
}
