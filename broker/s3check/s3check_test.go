package s3check_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cwcreds/cwcreds/broker/cwapi"
	"github.com/cwcreds/cwcreds/broker/s3check"
)

const region = "us-east-04a"

// fakeS3 answers ListBuckets like S3: it verifies the request's SigV4
// Authorization header by signing the same request again with the SDK's
// signer and the secret it knows for the key, and answers S3-style XML
// errors. refuse, when set, overrides the answer for a verified request.
type fakeS3 struct {
	secrets map[string]string

	mu       sync.Mutex
	refuse   func(keyID string) (status int, body string)
	accepted []string // key ids, in order
	scopes   []string
}

func (s *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	keyID, code := s.verify(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if code != "" {
		writeError(w, http.StatusForbidden, code)
		return
	}
	if s.refuse != nil {
		if status, body := s.refuse(keyID); status != 0 {
			w.WriteHeader(status)
			fmt.Fprint(w, body)
			return
		}
	}
	if r.Method != http.MethodGet || r.URL.Path != "/" {
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed")
		return
	}
	s.accepted = append(s.accepted, keyID)
	fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>`)
}

func writeError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>refused</Message><RequestId>r1</RequestId></Error>`, code)
}

// verify returns the signing key id, or the S3 error code refusing r.
func (s *fakeS3) verify(r *http.Request) (keyID, code string) {
	const prefix = "AWS4-HMAC-SHA256 "
	authz := r.Header.Get("Authorization")
	if !strings.HasPrefix(authz, prefix) {
		return "", "AccessDenied"
	}
	fields := map[string]string{}
	for part := range strings.SplitSeq(strings.TrimPrefix(authz, prefix), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/") // id/date/region/service/aws4_request
	if len(scope) != 5 || scope[3] != "s3" || scope[4] != "aws4_request" {
		return "", "AuthorizationHeaderMalformed"
	}
	keyID = scope[0]
	s.mu.Lock()
	s.scopes = append(s.scopes, strings.Join(scope[1:], "/"))
	s.mu.Unlock()
	secret, ok := s.secrets[keyID]
	if !ok {
		return keyID, "InvalidAccessKeyId"
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || scope[1] != when.Format("20060102") {
		return keyID, "AccessDenied"
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	again, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	for h := range strings.SplitSeq(fields["SignedHeaders"], ";") {
		if h != "host" {
			again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	creds := aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret}
	if err := v4.NewSigner().SignHTTP(r.Context(), creds, again, payload, scope[3], scope[2], when); err != nil {
		return keyID, "InternalError"
	}
	_, want, _ := strings.Cut(again.Header.Get("Authorization"), "Signature=")
	if want == "" || want != fields["Signature"] {
		return keyID, "SignatureDoesNotMatch"
	}
	return keyID, ""
}

func newChecker(t *testing.T, url string, now time.Time) *s3check.Checker {
	t.Helper()
	c, err := s3check.New(url, region, func(o *s3check.Options) { o.Now = func() time.Time { return now } })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheck(t *testing.T) {
	const secret = "cwo-the-right-secret-0123456789abcdefghij"
	s3 := &fakeS3{secrets: map[string]string{"CWKNOWN": secret, "CWDENIED": secret, "CWSLOW": secret, "CWODD": secret, "CWBARE": secret}}
	s3.refuse = func(id string) (int, string) {
		switch id {
		case "CWDENIED":
			return 403, `<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`
		case "CWSLOW":
			return 503, `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`
		case "CWODD":
			return 403, `<Error><Code>Access Denied; key cwo-the-right-secret</Code></Error>`
		case "CWBARE":
			return 403, `forbidden`
		}
		return 0, ""
	}
	srv := httptest.NewServer(s3)
	defer srv.Close()
	now := time.Date(2026, 12, 6, 5, 30, 0, 0, time.UTC)
	c := newChecker(t, srv.URL, now)

	for _, tc := range []struct {
		name, id, secret string
		status           int
		code             string
	}{
		{"accepted", "CWKNOWN", secret, 0, ""},
		{"unknown key", "CWNOTYET", secret, 403, s3check.CodeInvalidAccessKeyID},
		{"wrong secret", "CWKNOWN", "cwo-a-wrong-secret", 403, s3check.CodeSignatureDoesNotMatch},
		{"access denied", "CWDENIED", secret, 403, s3check.CodeAccessDenied},
		{"slow down", "CWSLOW", secret, 503, "SlowDown"},
		{"code that is not a code", "CWODD", secret, 403, ""},
		{"no XML", "CWBARE", secret, 403, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Check(t.Context(), &cwapi.Credentials{AccessKeyID: tc.id, SecretAccessKey: tc.secret})
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("Check = %v, want accepted", err)
				}
				return
			}
			var se *s3check.Error
			if !errors.As(err, &se) || se.StatusCode != tc.status || se.Code != tc.code {
				t.Fatalf("Check = %#v, want HTTP %d code %q", err, tc.status, tc.code)
			}
			if strings.Contains(err.Error(), "cwo-") {
				t.Errorf("error %q holds a secret", err)
			}
		})
	}
	s3.mu.Lock()
	defer s3.mu.Unlock()
	if len(s3.accepted) != 1 || s3.accepted[0] != "CWKNOWN" {
		t.Errorf("S3 accepted %v, want only the known key", s3.accepted)
	}
	for _, sc := range s3.scopes {
		if sc != "20261206/"+region+"/s3/aws4_request" {
			t.Errorf("credential scope %q, want the injected date and the region", sc)
		}
	}
}

// TestCheckUnreachable: an endpoint nobody answers yields an error that is
// not an *Error, so the broker tells it from a refusal.
func TestCheckUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	err := newChecker(t, url, time.Now()).Check(t.Context(), &cwapi.Credentials{AccessKeyID: "CWX", SecretAccessKey: "cwo-secret"})
	var se *s3check.Error
	if err == nil || errors.As(err, &se) || strings.Contains(err.Error(), "cwo-secret") {
		t.Errorf("Check against a closed port = %v, want a network error without the secret", err)
	}
}

func TestNewRejectsBadSettings(t *testing.T) {
	for _, tc := range []struct{ endpoint, region string }{
		{"cwobject.com", region},
		{"ftp://cwobject.com", region},
		{"https://cwobject.com/?x=1", region},
		{"https://cwobject.com", ""},
	} {
		if _, err := s3check.New(tc.endpoint, tc.region); err == nil {
			t.Errorf("New(%q, %q) accepted", tc.endpoint, tc.region)
		}
	}
}
