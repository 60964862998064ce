package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// TestSetProfiles: after SetProfiles returns, an unchanged profile is the
// same profile (render cache and counter kept, no re-render), a changed
// token refuses the old token and serves the new one, a removed profile is
// unknown, an added one is served, and a changed Access applies.
func TestSetProfiles(t *testing.T) {
	reqs := &countingRequests{}
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
		o.ClientTokens = map[string]string{"a": "tok-a", "b": "tok-b", "c": "tok-c"}
		o.Access = map[string]Access{"c": {UIDs: []uint32{1000}}}
		o.Peers = &fakePeers{uid: 1000}
		o.Requests = reqs
	})
	status := func(name, token string) int {
		t.Helper()
		return serve(s, credsRequest(name, token)).Code
	}
	if got := status("a", "tok-a"); got != 200 {
		t.Fatalf("a before reload: %d", got)
	}
	a, b := s.profile("a"), s.profile("b")
	rendered := a.rendered.Load()
	body := rendered.body
	var renders atomic.Int32
	a.onRender = func() { renders.Add(1) }

	access := map[string]Access{"c": {UIDs: []uint32{1000}}}
	s.SetProfiles(map[string]string{"a": "tok-a", "b": "tok-b2", "d": "tok-d"}, access)

	if s.profile("a") != a {
		t.Error("unchanged profile a was replaced")
	}
	if got := status("a", "tok-a"); got != 200 {
		t.Errorf("kept a: %d, want 200", got)
	}
	if a.rendered.Load() != rendered || &a.rendered.Load().body[0] != &body[0] || renders.Load() != 0 {
		t.Errorf("kept a lost its rendered body (%d renders)", renders.Load())
	}
	if s.profile("b") == b {
		t.Error("b kept its profile despite a new token")
	}
	if got := status("b", "tok-b"); got != 401 {
		t.Errorf("b with its old token: %d, want 401", got)
	}
	if got := status("b", "tok-b2"); got != 200 {
		t.Errorf("b with its new token: %d, want 200", got)
	}
	checkJSONError(t, serve(s, credsRequest("c", "tok-c")), 404, codeUnknownProfile)
	if got := status("d", "tok-d"); got != 200 {
		t.Errorf("added d: %d, want 200", got)
	}

	// The counters: b's new profile asked for its counter again (same
	// name, so the same series), the removed c counts as unknown.
	reqs.mu.Lock()
	asked := slices.Sorted(slices.Values(reqs.asked))
	counts := reqs.counts
	reqs.mu.Unlock()
	if want := []string{"", "a", "b", "b", "c", "d"}; !slices.Equal(asked, want) {
		t.Errorf("Requests called for %q, want %q", asked, want)
	}
	if counts["a/ok"] != 2 || counts["b/unauthorized"] != 1 || counts["b/ok"] != 1 || counts["/unknown_profile"] != 1 {
		t.Errorf("counts = %v", counts)
	}

	// Access is compared by value and copied: editing the caller's slice
	// afterwards changes nothing; a new Access replaces the profile.
	s.SetProfiles(map[string]string{"a": "tok-a", "c": "tok-c"}, access)
	c := s.profile("c")
	access["c"].UIDs[0] = 1
	if got := status("c", "tok-c"); got != 200 {
		t.Errorf("c after the caller edited its Access slice: %d, want 200", got)
	}
	s.SetProfiles(map[string]string{"a": "tok-a", "c": "tok-c"}, map[string]Access{"c": {UIDs: []uint32{1000}}})
	if s.profile("c") != c {
		t.Error("c replaced although its Access is equal")
	}
	s.SetProfiles(map[string]string{"a": "tok-a", "c": "tok-c"}, map[string]Access{"a": {UIDs: []uint32{7}}, "c": {UIDs: []uint32{1000}}})
	if s.profile("a") == a {
		t.Error("a kept its profile despite a new Access")
	}
	checkJSONError(t, serve(s, credsRequest("a", "tok-a")), 403, codeForbidden)
}

// TestSetProfilesRemovesIMDSRole: when a reload drops the IMDS role's
// profile, IMDS requests fail cleanly with 404 (no panic, counted as an
// unknown profile); bringing it back serves it again.
func TestSetProfilesRemovesIMDSRole(t *testing.T) {
	reqs := &countingRequests{}
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()}, func(o *Options) {
		o.IMDSProfile = testProfile
		o.Requests = reqs
	})
	tok := imdsToken(t, s, "60")
	role := request(http.MethodGet, imdsCredsPath+"/"+testProfile, hdrIMDSToken, tok)
	list := request(http.MethodGet, imdsCredsPath+"/", hdrIMDSToken, tok)

	s.SetProfiles(map[string]string{"other": "tok"}, nil)
	checkJSONError(t, serve(s, list), 404, codeNotFound)
	msg := checkJSONError(t, serve(s, role), 404, codeUnknownProfile)
	if want := fmt.Sprintf("unknown profile: %q", testProfile); msg != want {
		t.Errorf("message %q, want %q", msg, want)
	}
	reqs.mu.Lock()
	unknown := reqs.counts["/unknown_profile"]
	reqs.mu.Unlock()
	if unknown != 1 {
		t.Errorf("unknown_profile count = %d, want 1", unknown)
	}

	s.SetProfiles(map[string]string{testProfile: testToken}, nil)
	if rec := serve(s, role); rec.Code != 200 {
		t.Errorf("role after it came back: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(s, list); rec.Code != 200 || rec.Body.String() != testProfile {
		t.Errorf("list after the role came back: %d %s", rec.Code, rec.Body)
	}
}

// TestSetProfilesConcurrent: requests racing repeated reloads (run with
// -race) see either set, never a mix that breaks a profile: the profile
// both sets keep unchanged is always served from one render; the others
// answer as one set or the other.
func TestSetProfilesConcurrent(t *testing.T) {
	s, _ := newTestServer(t, &fakeKeys{creds: testCreds()})
	setA := map[string]string{"stable": "tok-s", "flip": "tok-f", "rotate": "tok-1"}
	setB := map[string]string{"stable": "tok-s", "rotate": "tok-2"}
	s.SetProfiles(setA, nil)
	var renders atomic.Int32
	s.profile("stable").onRender = func() { renders.Add(1) }

	const workers, requests, reloads = 4, 300, 200
	type probe struct {
		name, token string
		allowed     []int
	}
	probes := []probe{
		{"stable", "tok-s", []int{200}},
		{"flip", "tok-f", []int{200, 404}},
		{"rotate", "tok-1", []int{200, 401}},
		{"rotate", "tok-2", []int{200, 401}},
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range requests {
				pr := probes[(w+i)%len(probes)]
				if got := serve(s, credsRequest(pr.name, pr.token)).Code; !slices.Contains(pr.allowed, got) {
					t.Errorf("%s with %s: %d, want one of %v", pr.name, pr.token, got, pr.allowed)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range reloads {
			if i%2 == 0 {
				s.SetProfiles(setB, nil)
			} else {
				s.SetProfiles(setA, nil)
			}
		}
	})
	wg.Wait()

	if n := renders.Load(); n != 1 {
		t.Errorf("the kept profile was rendered %d times, want once", n)
	}
	s.SetProfiles(setB, nil)
	for _, pr := range []struct {
		name, token string
		want        int
	}{{"stable", "tok-s", 200}, {"flip", "tok-f", 404}, {"rotate", "tok-1", 401}, {"rotate", "tok-2", 200}} {
		if got := serve(s, credsRequest(pr.name, pr.token)).Code; got != pr.want {
			t.Errorf("after the last reload %s with %s: %d, want %d", pr.name, pr.token, got, pr.want)
		}
	}
}

// TestReloadPinsCacheEntry: the server reads a profile's client token and
// key from one reload. Between Cache.Update replacing a profile (another
// identity, another client token) and SetProfiles, a request with the old
// token still gets the old identity's key, never the new one's; after
// SetProfiles the new token gets the new key and the old one is refused.
// Without the pinned broker.Entry the old token would buy the new key.
func TestReloadPinsCacheEntry(t *testing.T) {
	minter := func(id string) cwapi.Minter {
		return cwapi.MinterFunc(func(context.Context) (*cwapi.Credentials, error) {
			return &cwapi.Credentials{AccessKeyID: id, SecretAccessKey: "cwoSECRET" + id, Principal: "coreweave/" + id,
				Expires: time.Now().Add(time.Hour)}, nil
		})
	}
	cache, err := broker.NewCache([]broker.CacheProfile{
		{Name: "p", Source: cwapi.SourceAccessKey, Fingerprint: "old", Minter: minter("CWKEYOLD")}})
	if err != nil {
		t.Fatal(err)
	}
	s := New(zerolog.Nop(), cache, Options{ClientTokens: map[string]string{"p": "tok-old"}})
	key := func(token string) string {
		t.Helper()
		rec := serve(s, credsRequest("p", token))
		if rec.Code != http.StatusOK {
			return fmt.Sprint(rec.Code)
		}
		var body credentialsBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		return body.AccessKeyID
	}
	if got := key("tok-old"); got != "CWKEYOLD" {
		t.Fatalf("before the reload: %s, want CWKEYOLD", got)
	}
	if _, err := cache.Update([]broker.CacheProfile{
		{Name: "p", Source: cwapi.SourceAccessKey, Fingerprint: "new", Minter: minter("CWKEYNEW")}}); err != nil {
		t.Fatal(err)
	}
	if got := key("tok-old"); got != "CWKEYOLD" {
		t.Errorf("between Update and SetProfiles, the old token got %s, want the old identity's CWKEYOLD", got)
	}
	s.SetProfiles(map[string]string{"p": "tok-new"}, nil)
	if got := key("tok-new"); got != "CWKEYNEW" {
		t.Errorf("after SetProfiles, the new token got %s, want CWKEYNEW", got)
	}
	if got := key("tok-old"); got != "401" {
		t.Errorf("after SetProfiles, the old token got %s, want 401", got)
	}
}
