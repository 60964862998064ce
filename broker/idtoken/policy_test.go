package idtoken

import (
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestPolicyCheck(t *testing.T) {
	const iss = "https://issuer.example"
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	exp := now.Add(time.Hour)
	p := Policy{Issuers: []string{"https://other.example", iss}, Audience: testAudience, Leeway: DefaultLeeway}
	ok := &Claims{Issuer: iss, Subject: "s", Audience: []string{"x", testAudience}, Expiry: exp, NotBefore: now, IssuedAt: now}
	mod := func(f func(c *Claims)) *Claims { c := *ok; f(&c); return &c }
	tests := []struct {
		name   string
		policy Policy
		claims *Claims
		now    time.Time
		want   Reason // "" for accepted
	}{
		{"valid", p, ok, now, ""},
		{"iss not allowed", p, mod(func(c *Claims) { c.Issuer = "https://evil.example" }), now, ReasonIssuer},
		{"iss differs by a trailing slash", p, mod(func(c *Claims) { c.Issuer = iss + "/" }), now, ReasonIssuer},
		{"aud string without the audience", p, mod(func(c *Claims) { c.Audience = []string{"https://kubernetes.default.svc"} }), now, ReasonAudience},
		{"aud array without the audience", p, mod(func(c *Claims) { c.Audience = []string{"a", "b", "https://coreweave.com/iam/"} }), now, ReasonAudience},
		{"aud absent", p, mod(func(c *Claims) { c.Audience = nil }), now, ReasonAudience},
		{"expired beyond leeway", p, ok, exp.Add(DefaultLeeway), ReasonExpired},
		{"expired within leeway", p, ok, exp.Add(DefaultLeeway - time.Nanosecond), ""},
		{"exp exactly now, no leeway", Policy{Issuers: p.Issuers, Audience: p.Audience}, ok, exp, ReasonExpired},
		{"exp just ahead, no leeway", Policy{Issuers: p.Issuers, Audience: p.Audience}, ok, exp.Add(-time.Nanosecond), ""},
		{"nbf in the future beyond leeway", p, ok, now.Add(-DefaultLeeway - time.Nanosecond), ReasonNotYetValid},
		{"nbf in the future within leeway", p, ok, now.Add(-DefaultLeeway), ""},
		{"nbf absent", p, mod(func(c *Claims) { c.NotBefore = time.Time{} }), now.Add(-time.Hour), ""},
		{"iat in the future is not checked", p, mod(func(c *Claims) { c.IssuedAt = now.Add(time.Minute) }), now, ""},
		{"exp missing", p, mod(func(c *Claims) { c.Expiry = time.Time{} }), now, ReasonMalformed},
		{"nil claims", p, nil, now, ReasonMalformed},
		{"zero policy refuses", Policy{}, ok, now, ReasonIssuer},
		{"policy without audience refuses", Policy{Issuers: p.Issuers}, mod(func(c *Claims) { c.Audience = []string{""} }), now, ReasonAudience},
		{"issuer checked before expiry", p, mod(func(c *Claims) { c.Issuer = "x" }), exp.Add(time.Hour), ReasonIssuer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Check(tt.claims, tt.now)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			wantRefusal(t, err, tt.want, "")
		})
	}
}

// TestParseThenCheck is token mode as the daemon runs it: Parse, then Check.
func TestParseThenCheck(t *testing.T) {
	const iss = "https://issuer.example"
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	p := Policy{Issuers: []string{iss}, Audience: testAudience, Leeway: DefaultLeeway}
	k := keys()
	tests := []struct {
		name   string
		claims map[string]any
		want   Reason
	}{
		{"valid", claimsFor(iss, now), ""},
		{"aud string form", with(claimsFor(iss, now), "aud", testAudience), ""},
		{"aud string form, other audience", with(claimsFor(iss, now), "aud", "https://kubernetes.default.svc"), ReasonAudience},
		{"aud array form, other audiences", with(claimsFor(iss, now), "aud", []string{"a", "b"}), ReasonAudience},
		{"iss not allowed", claimsFor("https://evil.example", now), ReasonIssuer},
		{"expired", claimsFor(iss, now.Add(-2*time.Hour)), ReasonExpired},
		{"nbf in the future", with(claimsFor(iss, now), "nbf", now.Add(time.Minute).Unix()), ReasonNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := sign(t, jose.RS256, k.rsa1, "r1", tt.claims)
			c, err := Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = p.Check(c, now)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			wantRefusal(t, err, tt.want, raw)
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"valid", Policy{Issuers: []string{"i"}, Audience: "a", Leeway: time.Second}, true},
		{"no issuers", Policy{Audience: "a"}, false},
		{"empty issuer", Policy{Issuers: []string{"i", ""}, Audience: "a"}, false},
		{"no audience", Policy{Issuers: []string{"i"}}, false},
		{"negative leeway", Policy{Issuers: []string{"i"}, Audience: "a", Leeway: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
