package config

import (
	"errors"
	"os/user"
	"reflect"
	"testing"
)

// fakeIDs makes name lookups answer from fixed tables for the test.
func fakeIDs(t *testing.T) {
	t.Helper()
	oldU, oldG := lookupUser, lookupGroup
	t.Cleanup(func() { lookupUser, lookupGroup = oldU, oldG })
	users := map[string]string{"alice": "1001", "bob": "1002", "weird": "S-1-5-21"}
	groups := map[string]string{"ml": "2001", "gpu": "2002"}
	lookupUser = func(n string) (string, error) {
		if id, ok := users[n]; ok {
			return id, nil
		}
		return "", user.UnknownUserError(n)
	}
	lookupGroup = func(n string) (string, error) {
		if id, ok := groups[n]; ok {
			return id, nil
		}
		return "", user.UnknownGroupError(n)
	}
}

func TestLoadAllowedIDs(t *testing.T) {
	fakeIDs(t)
	cfg, err := load(t, with(minimal, map[string]string{
		"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS": " alice, 0,1002 ,bob,,",
		"CWCREDS_PROFILE_TRAIN_ALLOWED_GIDS": "ml,3000",
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	p := cfg.Profiles[0]
	if want := []uint32{1001, 0, 1002}; !reflect.DeepEqual(p.AllowedUIDs, want) {
		t.Errorf("AllowedUIDs = %v, want %v (names resolved, duplicates dropped)", p.AllowedUIDs, want)
	}
	if want := []uint32{2001, 3000}; !reflect.DeepEqual(p.AllowedGIDs, want) {
		t.Errorf("AllowedGIDs = %v, want %v", p.AllowedGIDs, want)
	}
	if !p.Restricted() {
		t.Error("Restricted() = false")
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	cfg, err = load(t, with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_ALLOWED_GIDS": "gpu"}))
	if err != nil || !reflect.DeepEqual(cfg.Profiles[0].AllowedGIDs, []uint32{2002}) || cfg.Profiles[0].AllowedUIDs != nil {
		t.Errorf("GIDs only: %+v, %v", cfg, err)
	}
	cfg, err = load(t, with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS": " , "}))
	if err != nil || cfg.Profiles[0].Restricted() {
		t.Errorf("an empty list restricts nothing: %+v, %v", cfg, err)
	}
}

func TestLoadAllowedIDsProblems(t *testing.T) {
	fakeIDs(t)
	_, err := load(t, with(minimal, map[string]string{
		"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS": "alice,mallory,4294967295,99999999999,weird",
		"CWCREDS_PROFILE_TRAIN_ALLOWED_GIDS": "ml,nogroup-here",
	}))
	checkProblems(t, err, []wantProblem{
		{"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS", `"mallory" cannot be resolved`},
		{"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS", `"4294967295" is out of range`},
		{"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS", `"99999999999" is out of range`},
		{"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS", `"weird" resolves to "S-1-5-21", which is not a numeric id`},
		{"CWCREDS_PROFILE_TRAIN_ALLOWED_GIDS", `"nogroup-here" cannot be resolved`},
	})
	var e *Error
	if errors.As(err, &e) {
		for _, p := range e.Problems {
			t.Log(p)
		}
	}
}

// The real user database: root is uid 0 and group root (or wheel) gid 0
// on every Linux host.
func TestLoadAllowedIDsRealNames(t *testing.T) {
	u, err := user.LookupId("0")
	if err != nil {
		t.Skipf("no user database: %v", err)
	}
	g, err := user.LookupGroupId("0")
	if err != nil {
		t.Skipf("no group database: %v", err)
	}
	cfg, err := load(t, with(minimal, map[string]string{
		"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS": u.Username,
		"CWCREDS_PROFILE_TRAIN_ALLOWED_GIDS": g.Name,
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if p := cfg.Profiles[0]; !reflect.DeepEqual(p.AllowedUIDs, []uint32{0}) || !reflect.DeepEqual(p.AllowedGIDs, []uint32{0}) {
		t.Errorf("%s / %s resolved to %v / %v, want [0] / [0]", u.Username, g.Name, p.AllowedUIDs, p.AllowedGIDs)
	}
	_, err = load(t, with(minimal, map[string]string{"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS": "no-such-user-cwcreds-x"}))
	checkProblems(t, err, []wantProblem{{"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS", `"no-such-user-cwcreds-x" cannot be resolved`}})
}

func TestValidateAllowedIDs(t *testing.T) {
	cfg, err := load(t, minimal)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Profiles[0].AllowedGIDs = []uint32{5, 1<<32 - 1}
	checkProblems(t, cfg.Validate(), []wantProblem{{"CWCREDS_PROFILE_TRAIN_ALLOWED_GIDS", "4294967295 is not a valid id"}})
}
