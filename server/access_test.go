package server

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
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

func (f *fakePeers) PeerGroups(*http.Request) ([]uint32, error) {
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
