// Package s3check asks an S3 endpoint whether it accepts an access key, with
// one cheap signed request: ListBuckets (GET / on the endpoint), signed with
// SigV4 by aws-sdk-go-v2's own signer. The broker uses it to check every new
// key before serving it (broker.CacheOptions.Verifier).
package s3check

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// The S3 error codes a check distinguishes.
const (
	// CodeInvalidAccessKeyID: S3 does not know the key (yet): a new key
	// answers this until it has propagated.
	CodeInvalidAccessKeyID = "InvalidAccessKeyId"
	// CodeSignatureDoesNotMatch: S3 knows the key but not with this secret.
	CodeSignatureDoesNotMatch = "SignatureDoesNotMatch"
	// CodeAccessDenied: the key authenticated but may not list buckets.
	CodeAccessDenied = "AccessDenied"
)

const (
	// RequestTimeout bounds one check request when the caller's context
	// has no earlier deadline.
	RequestTimeout = 5 * time.Second
	maxReplyBytes  = 64 << 10
	maxCodeLen     = 64
	// emptySHA256 is the payload hash of a request without a body.
	emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// Error is S3's refusal of a check: a non-2xx reply. It never holds S3's
// free-text message, only the status and the error code, which is reduced
// to a short token of letters, digits and dots.
type Error struct {
	StatusCode int
	// Code is S3's error code, e.g. "InvalidAccessKeyId"; "" when the
	// reply carried none (a HEAD-style or non-XML body).
	Code string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("s3 refused the key check: HTTP %d", e.StatusCode)
	}
	return fmt.Sprintf("s3 refused the key check: HTTP %d %s", e.StatusCode, e.Code)
}

// S3ErrorCode and HTTPStatus let the broker classify the refusal without
// importing this package.
func (e *Error) S3ErrorCode() string { return e.Code }

// HTTPStatus is the reply's HTTP status.
func (e *Error) HTTPStatus() int { return e.StatusCode }

// HTTPDoer sends HTTP requests; *http.Client satisfies it.
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// Options tunes a Checker.
type Options struct {
	// HTTPClient sends the requests. Default: cwapi.NewHTTPClient() (bounded
	// timeouts, no redirects).
	HTTPClient HTTPDoer
	// Now is the signing time. Default time.Now.
	Now func() time.Time
}

// Checker checks keys against one S3 endpoint. It is safe for concurrent
// use.
type Checker struct {
	endpoint *url.URL
	region   string
	http     HTTPDoer
	now      func() time.Time
	signer   *v4.Signer
}

// New returns a Checker for the S3 endpoint (an absolute http(s) URL such
// as "https://cwobject.com") and the signing region.
func New(endpoint, region string, opts ...func(*Options)) (*Checker, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("s3 endpoint %q: want an absolute http(s) URL without query", endpoint)
	}
	if region == "" {
		return nil, errors.New("s3 region: required to sign requests")
	}
	u.Path = "/"
	o := Options{Now: time.Now}
	for _, fn := range opts {
		fn(&o)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = cwapi.NewHTTPClient()
	}
	return &Checker{endpoint: u, region: region, http: o.HTTPClient, now: o.Now, signer: v4.NewSigner()}, nil
}

// Check sends ListBuckets signed with key. It returns nil when S3 accepts
// the key, an *Error when S3 answers with an error, and any other error when
// S3 could not be asked (network, timeout, unreadable reply).
func (c *Checker) Check(ctx context.Context, key *cwapi.Credentials) error {
	if key == nil {
		return errors.New("s3 check: no key")
	}
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint.String(), http.NoBody)
	if err != nil {
		return fmt.Errorf("s3 check: %w", err)
	}
	req.Header.Set("User-Agent", "cwcreds")
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	creds := aws.Credentials{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey}
	if err := c.signer.SignHTTP(ctx, creds, req, emptySHA256, "s3", c.region, c.now().UTC()); err != nil {
		return fmt.Errorf("s3 check: sign: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("s3 check: %w", err) // *url.Error names the endpoint only
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return fmt.Errorf("s3 check: read reply: %w", err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	return &Error{StatusCode: resp.StatusCode, Code: errorCode(data)}
}

// errorCode reads <Error><Code> from an S3 XML error body, keeping it only
// when it looks like an S3 code (letters, digits, dots; short).
func errorCode(body []byte) string {
	var e struct {
		Code string `xml:"Code"`
	}
	if xml.Unmarshal(body, &e) != nil {
		return ""
	}
	code := strings.TrimSpace(e.Code)
	if code == "" || len(code) > maxCodeLen {
		return ""
	}
	for _, r := range code {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.') {
			return ""
		}
	}
	return code
}
