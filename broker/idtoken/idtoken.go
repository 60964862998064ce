// Package idtoken reads the OIDC ID tokens that workloads present (for
// example a Kubernetes projected service-account token): Parse decodes one
// without checking its signature, Policy checks its claims, and a Verifier
// also checks its signature against the issuer's published keys (JWKS).
//
// Every refusal is an *Error whose Reason is one of a closed set (the
// Reason constants), so callers can map it to an HTTP status, a JSON error
// code and a metric label. No error text ever contains the token or any of its signature.
//
// The JOSE work (JWS parsing, JWK decoding, signature checks) is done by
// github.com/go-jose/go-jose/v4; this package only decodes the claims,
// applies the policy and manages the key sets.
package idtoken

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// MaxTokenBytes bounds a token. A Kubernetes projected token is about 1 KB;
// anything larger than this is refused as ReasonMalformed before any
// decoding.
const MaxTokenBytes = 16 << 10

// Claims are the parts of a token this package reads. A Claims returned by
// Parse is unverified: only Verifier.Verify vouches for its contents.
type Claims struct {
	Issuer, Subject string
	// Audience holds "aud", which may be a string or an array of strings.
	Audience []string
	// Expiry is "exp"; a token without it is malformed.
	Expiry time.Time
	// NotBefore and IssuedAt are "nbf" and "iat"; zero when absent.
	NotBefore, IssuedAt time.Time

	// The Kubernetes claims ("kubernetes.io": namespace,
	// serviceaccount.name/uid, pod.name/uid, node.name); "" when absent.
	Namespace, ServiceAccount, Pod, Node string
	ServiceAccountUID, PodUID            string

	// Algorithm and KeyID are "alg" and "kid" from the JOSE header.
	Algorithm, KeyID string
}

// Reason is why a token was refused. It is a closed set, safe as a metric
// label and as a JSON error code.
type Reason string

// The reasons a token is refused.
const (
	// ReasonMalformed: not a compact JWS with a JSON object header and
	// claims, larger than MaxTokenBytes, or missing exp, iss or sub.
	ReasonMalformed Reason = "malformed"
	// ReasonIssuer: iss is not one of the allowed issuers.
	ReasonIssuer Reason = "issuer"
	// ReasonAudience: aud does not contain the required audience.
	ReasonAudience Reason = "audience"
	// ReasonExpired: exp (plus the leeway) has passed.
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: nbf (minus the leeway) is still ahead.
	ReasonNotYetValid Reason = "not_yet_valid"
	// ReasonAlgorithm: alg is "none", an HMAC algorithm, or (when verifying)
	// not on the allow-list.
	ReasonAlgorithm Reason = "algorithm"
	// ReasonSignature: no key of the issuer verifies the signature, or the
	// kid is unknown even after a refetch of the issuer's keys.
	ReasonSignature Reason = "signature"
	// ReasonKeys: the issuer's discovery document or JWKS could not be
	// fetched, so the token could not be checked. This is not the caller's
	// fault: a 503-class condition, worth retrying.
	ReasonKeys Reason = "keys_unavailable"
)

// Error is every refusal from this package. Its text names the reason and a
// short detail (offending claim values are quoted and truncated to
// maxDetailValue bytes) and never contains the token or its signature.
// Callers branch with errors.As(err, &e) where e is an *Error.
type Error struct {
	Reason Reason
	Detail string
	// err is an underlying cause that carries no token material (a fetch
	// error or a context error), for errors.Is.
	err error
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "idtoken: " + string(e.Reason)
	}
	return "idtoken: " + string(e.Reason) + ": " + e.Detail
}

// Unwrap returns the cause of a ReasonKeys error (a fetch or context error),
// or nil.
func (e *Error) Unwrap() error { return e.err }

// ReasonOf returns the Reason of an *Error in err's chain, or "" if there is
// none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func refuse(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// maxDetailValue bounds each claim value quoted in an error.
const maxDetailValue = 100

// quote returns s quoted for an error detail, truncated to maxDetailValue
// bytes.
func quote(s string) string {
	if len(s) > maxDetailValue {
		return strconv.Quote(s[:maxDetailValue]) + "..."
	}
	return strconv.Quote(s)
}

// Parse decodes a compact JWS's header and claims WITHOUT verifying its
// signature: it is for callers that rely on someone else (the upstream
// token exchange) to verify it. It still refuses alg "none" and the HMAC
// algorithms (ReasonAlgorithm), a header with "crit", an empty signature,
// and a token without exp, iss or sub (ReasonMalformed). raw is the token
// itself, with no "Bearer " prefix and no surrounding whitespace. Every
// error is an *Error.
func Parse(raw string) (*Claims, error) {
	c, _, err := parse(raw)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// parse is Parse, also returning the decoded payload so Verify can check
// that the claims it returns are the ones the signature covers.
func parse(raw string) (*Claims, []byte, error) {
	if raw == "" {
		return nil, nil, refuse(ReasonMalformed, "empty token")
	}
	if len(raw) > MaxTokenBytes {
		return nil, nil, refuse(ReasonMalformed, "token is %d bytes, more than %d", len(raw), MaxTokenBytes)
	}
	h64, rest, ok1 := strings.Cut(raw, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s64, ".") {
		return nil, nil, refuse(ReasonMalformed, "not a compact JWS (want three dot-separated segments, got %d)", strings.Count(raw, ".")+1)
	}
	hb, err := base64.RawURLEncoding.DecodeString(h64)
	if err != nil {
		return nil, nil, refuse(ReasonMalformed, "header is not base64url")
	}
	var c Claims
	if err := c.decodeHeader(hb); err != nil {
		return nil, nil, err
	}
	pb, err := base64.RawURLEncoding.DecodeString(p64)
	if err != nil {
		return nil, nil, refuse(ReasonMalformed, "claims are not base64url")
	}
	if s64 == "" {
		return nil, nil, refuse(ReasonMalformed, "empty signature")
	}
	if _, err := base64.RawURLEncoding.DecodeString(s64); err != nil {
		return nil, nil, refuse(ReasonMalformed, "signature is not base64url")
	}
	if err := c.decodeClaims(pb); err != nil {
		return nil, nil, err
	}
	return &c, pb, nil
}

// decodeObject decodes a JSON object into a map of its members. Matching
// member names exactly (encoding/json matches struct fields
// case-insensitively) keeps "ALG" from being read as "alg".
func decodeObject(b []byte, what string) (map[string]json.RawMessage, error) {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return nil, refuse(ReasonMalformed, "%s is not a JSON object", what)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, refuse(ReasonMalformed, "%s is not a JSON object", what)
	}
	return m, nil
}

func isNull(v json.RawMessage) bool { return string(v) == "null" }

// stringMember decodes m[name] as a string; absent or null is "".
func stringMember(m map[string]json.RawMessage, name, what string) (string, error) {
	v, ok := m[name]
	if !ok || isNull(v) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", refuse(ReasonMalformed, "%s %q is not a string", what, name)
	}
	return s, nil
}

func (c *Claims) decodeHeader(b []byte) error {
	m, err := decodeObject(b, "header")
	if err != nil {
		return err
	}
	if c.Algorithm, err = stringMember(m, "alg", "header member"); err != nil {
		return err
	}
	if c.KeyID, err = stringMember(m, "kid", "header member"); err != nil {
		return err
	}
	switch {
	case c.Algorithm == "":
		return refuse(ReasonMalformed, "header has no alg")
	case strings.EqualFold(c.Algorithm, "none"):
		return refuse(ReasonAlgorithm, "alg %s is refused: unsigned tokens are never accepted", quote(c.Algorithm))
	case isHMAC(c.Algorithm):
		return refuse(ReasonAlgorithm, "alg %s is refused: HMAC algorithms are never accepted", quote(c.Algorithm))
	}
	// RFC 7515 §4.1.11: a recipient must refuse a "crit" extension it does
	// not understand, and this package understands none.
	if _, ok := m["crit"]; ok {
		return refuse(ReasonMalformed, "header has crit, which is not supported")
	}
	return nil
}

// isHMAC reports whether alg names a MAC (HS256, HS384, ...) rather than a
// signature: verifying one would mean using a public key as a shared secret.
func isHMAC(alg string) bool {
	return len(alg) >= 2 && strings.EqualFold(alg[:2], "HS")
}

// kubernetesClaims is the "kubernetes.io" claim of a projected
// service-account token.
type kubernetesClaims struct {
	Namespace      string  `json:"namespace"`
	ServiceAccount *objRef `json:"serviceaccount"`
	Pod            *objRef `json:"pod"`
	Node           *objRef `json:"node"`
}

type objRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

func (r *objRef) name() string {
	if r == nil {
		return ""
	}
	return r.Name
}

func (r *objRef) uid() string {
	if r == nil {
		return ""
	}
	return r.UID
}

// rawClaims is the claims object as decoded in one pass (half the cost of
// decoding it into a map first); the members whose JSON type varies are
// decoded after. Member names match as encoding/json matches them: exactly,
// or else case-insensitively, the last duplicate winning. Only the header,
// whose "alg" decides what is refused, is matched strictly by name.
type rawClaims struct {
	Iss        *string           `json:"iss"`
	Sub        *string           `json:"sub"`
	Aud        json.RawMessage   `json:"aud"`
	Exp        json.RawMessage   `json:"exp"`
	Nbf        json.RawMessage   `json:"nbf"`
	Iat        json.RawMessage   `json:"iat"`
	Kubernetes *kubernetesClaims `json:"kubernetes.io"`
}

func (c *Claims) decodeClaims(b []byte) error {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return refuse(ReasonMalformed, "claims are not a JSON object")
	}
	var r rawClaims
	if err := json.Unmarshal(b, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return refuse(ReasonMalformed, "claim %q has the wrong JSON type", te.Field)
		}
		return refuse(ReasonMalformed, "claims are not a JSON object")
	}
	var err error
	if r.Iss != nil {
		c.Issuer = *r.Iss
	}
	if r.Sub != nil {
		c.Subject = *r.Sub
	}
	if c.Audience, err = audience(r.Aud); err != nil {
		return err
	}
	if c.Expiry, err = numericDate(r.Exp, "exp"); err != nil {
		return err
	}
	if c.NotBefore, err = numericDate(r.Nbf, "nbf"); err != nil {
		return err
	}
	if c.IssuedAt, err = numericDate(r.Iat, "iat"); err != nil {
		return err
	}
	switch {
	case c.Issuer == "":
		return refuse(ReasonMalformed, "claim \"iss\" is missing")
	case c.Subject == "":
		return refuse(ReasonMalformed, "claim \"sub\" is missing")
	case c.Expiry.IsZero():
		return refuse(ReasonMalformed, "claim \"exp\" is missing")
	}
	if k := r.Kubernetes; k != nil {
		c.Namespace = k.Namespace
		c.ServiceAccount, c.ServiceAccountUID = k.ServiceAccount.name(), k.ServiceAccount.uid()
		c.Pod, c.PodUID = k.Pod.name(), k.Pod.uid()
		c.Node = k.Node.name()
	}
	return nil
}

// audience decodes "aud": a string, an array of strings, or absent.
func audience(v json.RawMessage) ([]string, error) {
	if len(v) == 0 || isNull(v) {
		return nil, nil
	}
	switch v[0] {
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			return []string{s}, nil
		}
	case '[':
		var a []string
		if err := json.Unmarshal(v, &a); err == nil {
			return a, nil
		}
	}
	return nil, refuse(ReasonMalformed, "claim \"aud\" is neither a string nor an array of strings")
}

// maxNumericDate is 9999-12-31T23:59:59Z: later dates are refused rather
// than risk overflow in time arithmetic.
const maxNumericDate = 253402300799

// numericDate decodes an RFC 7519 NumericDate (seconds since the epoch, a
// JSON number that may have a fraction); absent or null is the zero time.
func numericDate(v json.RawMessage, name string) (time.Time, error) {
	if len(v) == 0 || isNull(v) {
		return time.Time{}, nil
	}
	var f float64
	if err := json.Unmarshal(v, &f); err != nil {
		return time.Time{}, refuse(ReasonMalformed, "claim %q is not a number", name)
	}
	if math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, refuse(ReasonMalformed, "claim %q is out of range", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}
