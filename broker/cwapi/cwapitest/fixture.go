package cwapitest

import "net/http/httptest"

// The identities StartFixture registers, for tests that need a working
// upstream and do not care which.
const (
	// FixtureAPIToken is an API access token of principal coreweave/u1 in
	// FixtureOrgID.
	FixtureAPIToken = "CW-SECRET-emulated"
	// FixtureDeniedAPIToken is a token whose identity may not mint.
	FixtureDeniedAPIToken = "CW-SECRET-denied"
	// FixtureOrgID is the organization of every fixture identity.
	FixtureOrgID = "cw123"
	// FixtureSAMLConfig is a SAML configuration of FixtureOrgID.
	FixtureSAMLConfig = "cfg1"
)

// TB is the part of testing.TB StartFixture needs (so that this package,
// which cwcreds demo links, does not import testing).
type TB interface {
	Helper()
	Cleanup(func())
	Fatal(args ...any)
}

// StartFixture starts an emulator on loopback for t, closed at t's
// cleanup, with the fixture identities registered and its own OIDC
// issuer (signing tokens for FixtureOrgID with DefaultAudience) trusted,
// and returns it with its base URL.
func StartFixture(t TB) (*Emulator, string) {
	t.Helper()
	emu := New(Options{})
	emu.AddAPIToken(FixtureAPIToken, Identity{Principal: "coreweave/u1", OrgID: FixtureOrgID})
	emu.AddAPIToken(FixtureDeniedAPIToken, Identity{Principal: "coreweave/u2", OrgID: FixtureOrgID, Denied: true})
	emu.AddSAMLConfig(FixtureSAMLConfig, SAMLConfig{OrgID: FixtureOrgID})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	if _, err := emu.StartIssuer(srv.URL, OIDCIssuer{OrgID: FixtureOrgID, Audience: DefaultAudience}); err != nil {
		t.Fatal(err)
	}
	return emu, srv.URL
}
