package idtoken

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultLeeway is the clock skew a Policy should allow on exp and nbf
// unless configured otherwise. 30 s covers NTP-synchronised nodes and an
// API server whose clocks differ by seconds, while adding at most 30 s to
// the life of a token that is normally valid for an hour. (go-jose's jwt
// package and go-oidc use 1 minute and 5 minutes; a shorter leeway is the
// stricter choice, and Kubernetes issues nbf equal to iat, so a node whose
// clock is behind by more than the leeway refuses fresh tokens for that
// long.)
const DefaultLeeway = 30 * time.Second

// Policy is what a profile accepts. The zero Policy accepts nothing.
type Policy struct {
	// Issuers are the allowed "iss" values, compared exactly.
	Issuers []string
	// Audience must be a member of "aud", compared exactly.
	Audience string
	// Leeway is the clock skew allowed on exp and nbf (see DefaultLeeway);
	// zero allows none.
	Leeway time.Duration
}

// Validate reports a Policy that can accept no token or is otherwise
// invalid: no issuers, an empty issuer, no audience, a negative leeway.
func (p Policy) Validate() error {
	var errs []error
	if len(p.Issuers) == 0 {
		errs = append(errs, errors.New("no allowed issuers"))
	}
	for i, iss := range p.Issuers {
		if iss == "" {
			errs = append(errs, fmt.Errorf("issuer %d is empty", i+1))
		}
	}
	if p.Audience == "" {
		errs = append(errs, errors.New("no audience"))
	}
	if p.Leeway < 0 {
		errs = append(errs, fmt.Errorf("leeway %v is negative", p.Leeway))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("idtoken policy: %w", err)
	}
	return nil
}

// Check reports whether c satisfies p at now: iss is allowed, aud contains
// the audience, now is before exp+Leeway and not before nbf-Leeway. It
// checks in that order and returns the first failure as an *Error. iat is
// not checked (nbf is what bounds the start of validity). An invalid Policy
// (see Validate) refuses every token.
func (p Policy) Check(c *Claims, now time.Time) error {
	if c == nil {
		return refuse(ReasonMalformed, "no claims")
	}
	if c.Issuer == "" || !slices.Contains(p.Issuers, c.Issuer) {
		return refuse(ReasonIssuer, "iss %s is not allowed", quote(c.Issuer))
	}
	if p.Audience == "" || !slices.Contains(c.Audience, p.Audience) {
		return refuse(ReasonAudience, "aud %s does not contain %s", quoteList(c.Audience), quote(p.Audience))
	}
	leeway := max(p.Leeway, 0)
	if c.Expiry.IsZero() {
		return refuse(ReasonMalformed, "claim \"exp\" is missing")
	}
	if !now.Before(c.Expiry.Add(leeway)) {
		return refuse(ReasonExpired, "expired at %s (now %s, leeway %v)", stamp(c.Expiry), stamp(now), leeway)
	}
	if !c.NotBefore.IsZero() && now.Add(leeway).Before(c.NotBefore) {
		return refuse(ReasonNotYetValid, "not valid before %s (now %s, leeway %v)", stamp(c.NotBefore), stamp(now), leeway)
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// quoteList quotes a list of claim values for an error detail, at most
// about 2*maxDetailValue bytes in all.
func quoteList(vs []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, v := range vs {
		if b.Len() > 2*maxDetailValue {
			fmt.Fprintf(&b, " ...%d more", len(vs)-i)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quote(v))
	}
	b.WriteByte(']')
	return b.String()
}
