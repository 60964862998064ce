package cwapi_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// TestListerAgainstEmulator: a profile's lister pages through the
// organization's keys and returns only those stamped with its node's and
// profile's attributes; sources whose keys cannot be told apart get none.
func TestListerAgainstEmulator(t *testing.T) {
	c, _ := newEmulated(t)
	ctx := t.Context()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(apiToken), 0o600); err != nil {
		t.Fatal(err)
	}
	mine := cwapi.AuditAttributes("node-a", "train")
	var want []string
	stamps := []map[string]string{mine, cwapi.AuditAttributes("node-b", "train"), cwapi.AuditAttributes("node-a", "eval"), nil}
	for range 5 {
		for i, attrs := range stamps {
			k, err := c.CreateAccessKey(ctx, apiToken, time.Hour, attrs)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				want = append(want, k.AccessKeyID)
			}
		}
	}
	spec := cwapi.MintSpec{Name: "train", Source: cwapi.SourceAccessKey, TokenFile: tokenFile, Duration: time.Hour, Attributes: mine}
	l := c.Lister(spec)
	if l == nil {
		t.Fatal("Lister(access-key) = nil")
	}
	keys, err := l.ListOwnKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		if !k.Active() || k.Expires.IsZero() || k.Principal != "coreweave/u1" {
			t.Errorf("listed %+v, want active with an expiry and the principal", k)
		}
		got = append(got, k.AccessKeyID)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("ListOwnKeys = %v, want %v", got, want)
	}

	// One page only holds part of them.
	page, err := c.ListAccessKeys(ctx, apiToken, 3, 4)
	if err != nil || len(page) != 4 {
		t.Errorf("ListAccessKeys(offset 3, limit 4) = %d keys, %v; want 4", len(page), err)
	}

	for _, s := range []cwapi.MintSpec{
		{Source: cwapi.SourceAPIToken, Attributes: mine},
		{Source: cwapi.SourceOIDC, Attributes: mine},
		{Source: cwapi.SourceSAML, Attributes: mine},
		{Source: cwapi.SourceAccessKey, Attributes: cwapi.AuditAttributes("", "train")},
	} {
		if l := c.Lister(s); l != nil {
			t.Errorf("Lister(%s, %v) = %v, want nil", s.Source, s.Attributes, l)
		}
	}
}
