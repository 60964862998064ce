package s3plane

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

const (
	algorithm     = "AWS4-HMAC-SHA256"
	amzDateFormat = "20060102T150405Z"
	maxPresign    = 7 * 24 * time.Hour // S3's limit on X-Amz-Expires
)

// Payload hash values other than a hex SHA-256.
const (
	unsignedPayload      = "UNSIGNED-PAYLOAD"
	streamingSigned      = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamingUnsignedTrl = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
)

// sigV4 is what a request claims about its signature.
type sigV4 struct {
	keyID         string
	date          time.Time // the signing time, X-Amz-Date
	scopeDate     string    // yyyymmdd in the credential scope
	region        string
	service       string
	signedHeaders []string // lower case, as listed
	signature     string   // lower-case hex
	presigned     bool
	expires       time.Duration // presigned only
	payloadHash   string
}

// parseAuth reads the SigV4 claims of r from its Authorization header or
// its presigned query.
func parseAuth(r *http.Request) (*sigV4, *s3Error) {
	authz := r.Header.Get("Authorization")
	q := r.URL.Query()
	switch {
	case authz != "" && (q.Has("X-Amz-Signature") || q.Has("X-Amz-Algorithm")):
		return nil, refuse(http.StatusBadRequest, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified")
	case authz != "":
		return parseHeaderAuth(r, authz)
	case q.Has("X-Amz-Algorithm") || q.Has("X-Amz-Signature") || q.Has("X-Amz-Credential"):
		return parseQueryAuth(q)
	case q.Has("AWSAccessKeyId") || q.Has("Signature"):
		return nil, refuse(http.StatusBadRequest, "InvalidRequest", "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.")
	}
	return nil, refuse(http.StatusForbidden, "AccessDenied", "Access Denied: anonymous requests are not accepted")
}

func parseHeaderAuth(r *http.Request, authz string) (*sigV4, *s3Error) {
	rest, ok := strings.CutPrefix(authz, algorithm+" ")
	if !ok {
		return nil, refuse(http.StatusBadRequest, "InvalidRequest", "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.")
	}
	fields := map[string]string{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, errHeaderMalformed("a component is not key=value")
		}
		fields[k] = v
	}
	s := &sigV4{}
	if aerr := s.setCredential(fields["Credential"], errHeaderMalformed); aerr != nil {
		return nil, aerr
	}
	s.signedHeaders = strings.Split(fields["SignedHeaders"], ";")
	s.signature = fields["Signature"]
	if fields["SignedHeaders"] == "" || s.signature == "" {
		return nil, errHeaderMalformed("it needs Credential, SignedHeaders and Signature")
	}
	var err error
	if s.date, err = time.Parse(amzDateFormat, r.Header.Get("X-Amz-Date")); err != nil {
		return nil, refuse(http.StatusForbidden, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
	}
	if s.date.Format("20060102") != s.scopeDate {
		return nil, errHeaderMalformed("Invalid credential date. Date is not the same as X-Amz-Date.")
	}
	s.payloadHash = r.Header.Get("X-Amz-Content-Sha256")
	if s.payloadHash == "" {
		return nil, refuse(http.StatusBadRequest, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
	}
	return s, nil
}

func parseQueryAuth(q url.Values) (*sigV4, *s3Error) {
	if q.Get("X-Amz-Algorithm") != algorithm {
		return nil, errQueryMalformed("X-Amz-Algorithm only supports %q", algorithm)
	}
	s := &sigV4{presigned: true}
	if aerr := s.setCredential(q.Get("X-Amz-Credential"), errQueryMalformed); aerr != nil {
		return nil, aerr
	}
	var err error
	if s.date, err = time.Parse(amzDateFormat, q.Get("X-Amz-Date")); err != nil {
		return nil, errQueryMalformed("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
	}
	if s.date.Format("20060102") != s.scopeDate {
		return nil, errQueryMalformed("Invalid credential date. Date is not the same as X-Amz-Date.")
	}
	secs, err := strconv.ParseInt(q.Get("X-Amz-Expires"), 10, 64)
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > maxPresign {
		return nil, errQueryMalformed("X-Amz-Expires must be a number of seconds from 1 to 604800")
	}
	s.expires = time.Duration(secs) * time.Second
	s.signedHeaders = strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	s.signature = q.Get("X-Amz-Signature")
	if q.Get("X-Amz-SignedHeaders") == "" || s.signature == "" {
		return nil, errQueryMalformed("the query needs X-Amz-SignedHeaders and X-Amz-Signature")
	}
	s.payloadHash = q.Get("X-Amz-Content-Sha256")
	if s.payloadHash == "" {
		s.payloadHash = unsignedPayload
	}
	return s, nil
}

// setCredential reads "<key id>/<yyyymmdd>/<region>/<service>/aws4_request".
func (s *sigV4) setCredential(cred string, malformed func(string, ...any) *s3Error) *s3Error {
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[0] == "" || parts[4] != "aws4_request" {
		return malformed("the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
	}
	if _, err := time.Parse("20060102", parts[1]); err != nil {
		return malformed("Invalid credential date %q", parts[1])
	}
	if parts[3] != "s3" {
		return malformed("incorrect service %q. This endpoint belongs to \"s3\".", parts[3])
	}
	s.keyID, s.scopeDate, s.region, s.service = parts[0], parts[1], parts[2], parts[3]
	return nil
}

// checkKey refuses a key the emulator never minted, one not usable now,
// and one younger than the propagation delay.
func (p *Plane) checkKey(keyID string, now time.Time) (cwapitest.Key, *s3Error) {
	k, ok := p.keys.Key(keyID)
	if !ok {
		return k, errInvalidKey(keyID)
	}
	switch {
	case k.Status == cwapitest.StatusDeleted:
		return k, refuse(http.StatusForbidden, "AccessDenied", "The AWS Access Key Id you provided has been revoked.").with("AWSAccessKeyId", keyID)
	case k.Status == cwapitest.StatusExpired || (!k.Expiry.IsZero() && !now.Before(k.Expiry)):
		return k, refuse(http.StatusForbidden, "ExpiredToken", msgExpiredToken).with("AWSAccessKeyId", keyID)
	case k.Status == cwapitest.StatusSuspended:
		return k, refuse(http.StatusForbidden, "AccessDenied", "The AWS Access Key Id you provided is suspended.").with("AWSAccessKeyId", keyID)
	case now.Sub(k.Created) < p.PropagationDelay():
		// Not yet known to S3: indistinguishable from a key never minted.
		return k, errInvalidKey(keyID)
	}
	return k, nil
}

// checkTime refuses a request signed too far from now, and a presigned
// URL used past its expiry.
func (p *Plane) checkTime(s *sigV4, now time.Time) *s3Error {
	if s.presigned {
		if now.Before(s.date.Add(-p.maxSkew)) {
			return refuse(http.StatusForbidden, "AccessDenied", "Request is not valid yet")
		}
		if !now.Before(s.date.Add(s.expires)) {
			return refuse(http.StatusForbidden, "AccessDenied", "Request has expired").
				with("X-Amz-Expires", strconv.Itoa(int(s.expires/time.Second))).
				with("Expires", s.date.Add(s.expires).UTC().Format(time.RFC3339)).
				with("ServerTime", now.UTC().Format(time.RFC3339))
		}
		return nil
	}
	if d := now.Sub(s.date); d > p.maxSkew || d < -p.maxSkew {
		return refuse(http.StatusForbidden, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.").
			with("RequestTime", s.date.UTC().Format(amzDateFormat)).
			with("ServerTime", now.UTC().Format(time.RFC3339)).
			with("MaxAllowedSkewMilliseconds", strconv.FormatInt(p.maxSkew.Milliseconds(), 10))
	}
	return nil
}

// signingRequest rebuilds r as the client signed it: its method, the path
// as sent on the wire, its query, and only the headers it signed.
func signingRequest(r *http.Request, s *sigV4) (*http.Request, *s3Error) {
	rawPath := r.URL.EscapedPath()
	if r.RequestURI != "" && strings.HasPrefix(r.RequestURI, "/") {
		rawPath, _, _ = strings.Cut(r.RequestURI, "?")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	query := r.URL.RawQuery
	if s.presigned {
		q := r.URL.Query()
		q.Del("X-Amz-Signature")
		query = q.Encode()
	}
	req := &http.Request{
		Method: r.Method,
		// Opaque keeps the path exactly as sent: the signer reads it as is.
		URL:    &url.URL{Scheme: scheme, Host: r.Host, Opaque: rawPath, RawQuery: query},
		Host:   r.Host,
		Header: http.Header{},
	}
	req = req.WithContext(r.Context())
	sawHost := false
	for _, h := range s.signedHeaders {
		switch h {
		case "host":
			sawHost = true
		case "content-length":
			req.ContentLength = r.ContentLength
			if req.ContentLength < 0 {
				req.ContentLength, _ = strconv.ParseInt(r.Header.Get("Content-Length"), 10, 64)
			}
		default:
			if h == "" || strings.ToLower(h) != h {
				return nil, errSignature(s.keyID)
			}
			vals := r.Header.Values(h)
			if len(vals) == 0 {
				vals = []string{""} // a signed header that is absent signs as empty
			}
			req.Header[http.CanonicalHeaderKey(h)] = vals
		}
	}
	if !sawHost {
		return nil, errSignature(s.keyID) // the signer always signs host
	}
	return req, nil
}

// verifySignature re-signs the request with the key's secret through
// aws-sdk-go-v2's signer and compares the signatures.
func (p *Plane) verifySignature(r *http.Request, s *sigV4, secret string) *s3Error {
	req, serr := signingRequest(r, s)
	if serr != nil {
		return serr
	}
	creds := aws.Credentials{AccessKeyID: s.keyID, SecretAccessKey: secret}
	var want string
	if s.presigned {
		uri, _, err := p.signer.PresignHTTP(r.Context(), creds, req, s.payloadHash, s.service, s.region, s.date)
		if err != nil {
			return errSignature(s.keyID)
		}
		u, err := url.Parse(uri)
		if err != nil {
			return errSignature(s.keyID)
		}
		want = u.Query().Get("X-Amz-Signature")
	} else {
		if err := p.signer.SignHTTP(r.Context(), creds, req, s.payloadHash, s.service, s.region, s.date); err != nil {
			return errSignature(s.keyID)
		}
		_, want, _ = strings.Cut(req.Header.Get("Authorization"), "Signature=")
	}
	if want == "" || subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(s.signature))) != 1 {
		return errSignature(s.keyID)
	}
	return nil
}

// admit authenticates r and, for a request with a body, replaces the body
// with its verified, decoded payload. It returns the id of the key the
// request claims to be signed with, also when it refuses it.
func (p *Plane) admit(r *http.Request) (string, *s3Error) {
	s, serr := parseAuth(r)
	if serr != nil {
		return "", serr
	}
	now := p.now()
	k, serr := p.checkKey(s.keyID, now)
	if serr != nil {
		return s.keyID, serr
	}
	if p.region != "" && s.region != p.region {
		return s.keyID, errHeaderMalformed("the region %q is wrong; expecting %q", s.region, p.region).with("Region", p.region)
	}
	if serr := p.checkTime(s, now); serr != nil {
		return s.keyID, serr
	}
	if serr := p.verifySignature(r, s, k.SecretKey); serr != nil {
		return s.keyID, serr
	}
	tok := r.Header.Get("X-Amz-Security-Token")
	if s.presigned {
		tok = r.URL.Query().Get("X-Amz-Security-Token")
	}
	if tok != "" {
		// Minted keys are plain keys: a client that sends a session token
		// with one was served a token it should not have been.
		return s.keyID, refuse(http.StatusBadRequest, "InvalidToken", "The provided token is malformed or otherwise invalid.")
	}
	if serr := p.readPayload(r, s, k.SecretKey); serr != nil {
		return s.keyID, serr
	}
	return s.keyID, nil
}
