package cwapi_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

const (
	apiToken = cwapitest.FixtureAPIToken
	orgID    = cwapitest.FixtureOrgID
	audience = cwapitest.DefaultAudience
)

// newEmulated returns a client talking to a fresh emulator over loopback
// (cwapitest.StartFixture).
func newEmulated(t *testing.T) (*cwapi.Client, *cwapitest.Emulator) {
	t.Helper()
	emu, url := cwapitest.StartFixture(t)
	c, err := cwapi.NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	return c, emu
}

func TestClientAgainstEmulatorEveryEndpoint(t *testing.T) {
	c, emu := newEmulated(t)
	ctx := t.Context()
	jwt := emu.Issuer().Token(cwapitest.TokenSpec{Namespace: "ml", ServiceAccount: "trainer"})
	saml := cwapitest.MakeSAMLResponse("researchers", "alice@example.com")
	attrs := cwapi.AuditAttributes("gpu-node-1.example", "train")
	tests := []struct {
		name      string
		mint      func() (*cwapi.Credentials, error)
		endpoint  string
		principal string
		lifetime  time.Duration
	}{
		{"access-key", func() (*cwapi.Credentials, error) { return c.CreateAccessKey(ctx, apiToken, 2*time.Hour, attrs) },
			cwapitest.EndpointAccessKey, "coreweave/u1", 2 * time.Hour},
		{"api-token", func() (*cwapi.Credentials, error) { return c.CreateAccessKeyFromAPIToken(ctx, apiToken) },
			cwapitest.EndpointAPIToken, "", cwapi.APITokenKeyLifetime},
		{"oidc", func() (*cwapi.Credentials, error) {
			return c.CreateAccessKeyFromOIDC(ctx, orgID, jwt, 30*time.Minute, attrs)
		},
			cwapitest.EndpointOIDC, "role/" + emu.Issuer().URL() + ":system:serviceaccount:ml:trainer", 30 * time.Minute},
		{"saml", func() (*cwapi.Credentials, error) {
			return c.CreateAccessKeyFromSAML(ctx, orgID, cwapitest.FixtureSAMLConfig, saml, 12*time.Hour, attrs)
		}, cwapitest.EndpointSAML, "saml/researchers", 12 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := tc.mint()
			if err != nil {
				t.Fatalf("mint: %v", err)
			}
			stored, ok := emu.Key(k.AccessKeyID)
			if !ok || stored.SecretKey != k.SecretAccessKey {
				t.Fatalf("key %s is not the one upstream minted", k.AccessKeyID)
			}
			if k.Principal != tc.principal {
				t.Errorf("principal = %q, want %q", k.Principal, tc.principal)
			}
			if left := time.Until(k.Expires); left > tc.lifetime || left < tc.lifetime-5*time.Second {
				t.Errorf("key expires in %s, want %s", left, tc.lifetime)
			}
			if tc.name != "api-token" && stored.Attributes[cwapi.AttrNode] != "gpu-node-1.example" {
				t.Errorf("attributes stored upstream = %v", stored.Attributes)
			}
			if got := emu.Stats().Mints[tc.endpoint]; got != 1 {
				t.Errorf("emulator counted %d mints on %s, want 1", got, tc.endpoint)
			}
		})
	}
	t.Run("revoke", func(t *testing.T) {
		k, err := c.CreateAccessKey(ctx, apiToken, time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.RevokeAccessKey(ctx, apiToken, k.AccessKeyID); err != nil {
			t.Fatal(err)
		}
		if stored, _ := emu.Key(k.AccessKeyID); stored.Status != cwapitest.StatusDeleted {
			t.Errorf("status after revoke = %s, want %s", stored.Status, cwapitest.StatusDeleted)
		}
		var api *cwapi.APIError
		if err := c.RevokeAccessKey(ctx, apiToken, "CWNOSUCHKEY00000"); !errors.As(err, &api) || api.StatusCode != 404 || api.Code != 5 {
			t.Errorf("revoke unknown key: %v, want 404 NOT_FOUND", err)
		}
	})
}

func TestClientAgainstEmulatorErrors(t *testing.T) {
	c, emu := newEmulated(t)
	ctx := t.Context()
	expired := emu.Issuer().Token(cwapitest.TokenSpec{Subject: "sa", TTL: -time.Minute})
	wrongAud := emu.Issuer().Token(cwapitest.TokenSpec{Subject: "sa", Audience: []string{"someone-else"}})
	tests := []struct {
		name       string
		call       func() error
		status     int
		code       int
		temporary  bool
		retryAfter time.Duration
	}{
		{"unknown API token", func() error { _, err := c.CreateAccessKey(ctx, "CW-SECRET-nope", time.Hour, nil); return err }, 401, 16, false, 0},
		{"api-token exchange unknown token", func() error { _, err := c.CreateAccessKeyFromAPIToken(ctx, "CW-SECRET-nope"); return err }, 401, 16, false, 0},
		{"permission denied", func() error {
			_, err := c.CreateAccessKey(ctx, cwapitest.FixtureDeniedAPIToken, time.Hour, nil)
			return err
		}, 403, 7, false, 0},
		{"expired OIDC token", func() error { _, err := c.CreateAccessKeyFromOIDC(ctx, orgID, expired, time.Hour, nil); return err }, 400, 3, false, 0},
		{"wrong audience", func() error { _, err := c.CreateAccessKeyFromOIDC(ctx, orgID, wrongAud, time.Hour, nil); return err }, 400, 3, false, 0},
		{"not a JWT", func() error { _, err := c.CreateAccessKeyFromOIDC(ctx, orgID, "garbage", time.Hour, nil); return err }, 400, 3, false, 0},
		{"SAML not base64", func() error {
			_, err := c.CreateAccessKeyFromSAML(ctx, orgID, cwapitest.FixtureSAMLConfig, "%%%", time.Hour, nil)
			return err
		}, 400, 3, false, 0},
		{"SAML unknown config", func() error {
			_, err := c.CreateAccessKeyFromSAML(ctx, orgID, "nope", cwapitest.MakeSAMLResponse("r", "p"), time.Hour, nil)
			return err
		}, 400, 3, false, 0},
		{"bad attribute", func() error {
			_, err := c.CreateAccessKey(ctx, apiToken, time.Hour, map[string]string{"cw-reserved": "x"})
			return err
		}, 400, 3, false, 0},
		{"throttled", func() error {
			emu.InjectFault(cwapitest.Fault{Status: 429, Code: 8, RetryAfter: 3 * time.Second, Count: 1})
			_, err := c.CreateAccessKey(ctx, apiToken, time.Hour, nil)
			return err
		}, 429, 8, true, 3 * time.Second},
		{"unavailable", func() error {
			emu.InjectFault(cwapitest.Fault{Endpoint: cwapitest.EndpointAPIToken, Status: 503, Code: 14, Count: 1})
			_, err := c.CreateAccessKeyFromAPIToken(ctx, apiToken)
			return err
		}, 503, 14, true, 0},
		{"internal", func() error {
			emu.InjectFault(cwapitest.Fault{Status: 500, Code: 13, Count: 1})
			_, err := c.CreateAccessKeyFromOIDC(ctx, orgID, expired, time.Hour, nil)
			return err
		}, 500, 13, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var api *cwapi.APIError
			if !errors.As(err, &api) {
				t.Fatalf("err = %v, want *APIError", err)
			}
			if api.StatusCode != tc.status || api.Code != tc.code || api.Temporary() != tc.temporary || api.RetryAfter != tc.retryAfter {
				t.Errorf("APIError = %+v (temporary %v), want status %d code %d temporary %v retry-after %s",
					api, api.Temporary(), tc.status, tc.code, tc.temporary, tc.retryAfter)
			}
			if strings.Contains(err.Error(), "CW-SECRET") {
				t.Errorf("error leaks a token: %v", err)
			}
		})
	}
	t.Run("malformed reply", func(t *testing.T) {
		emu.InjectFault(cwapitest.Fault{Malformed: true, Count: 1})
		if _, err := c.CreateAccessKey(ctx, apiToken, time.Hour, nil); !errors.Is(err, cwapi.ErrBadReply) {
			t.Errorf("err = %v, want ErrBadReply", err)
		}
	})
}
