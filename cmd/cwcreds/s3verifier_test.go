package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// s3Verifier is a minimal S3 stand-in that accepts a request only when its
// SigV4 signature verifies against the secret lookup returns for the signing
// key id: it re-signs the request with the AWS SDK's own signer and compares.
// It stores objects in memory (PUT/GET /bucket/key) and lists one bucket.
type s3Verifier struct {
	lookup func(accessKeyID string) (secret string, ok bool)

	mu       sync.Mutex
	objects  map[string][]byte
	verified map[string]int // requests accepted, per access key id
	rejected []string       // why requests were refused
}

func newS3Verifier(lookup func(string) (string, bool)) *s3Verifier {
	return &s3Verifier{lookup: lookup, objects: map[string][]byte{}, verified: map[string]int{}}
}

func (s *s3Verifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	keyID, err := s.verify(r, body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.rejected = append(s.rejected, err.Error())
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, "<Error><Code>SignatureDoesNotMatch</Code><Message>%s</Message></Error>", err)
		return
	}
	s.verified[keyID]++
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>o</ID></Owner><Buckets><Bucket><Name>shared</Name><CreationDate>2026-01-01T00:00:00.000Z</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>`)
	case r.Method == http.MethodPut:
		s.objects[r.URL.Path] = body
		sum := sha256.Sum256(body)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:16])+`"`)
	case r.Method == http.MethodGet:
		obj, ok := s.objects[r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, "<Error><Code>NoSuchKey</Code></Error>")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(obj)))
		w.Write(obj)
	default:
		w.WriteHeader(http.StatusNotImplemented)
	}
}

// verify checks the Authorization header of r and returns the signing key.
func (s *s3Verifier) verify(r *http.Request, body []byte) (string, error) {
	const prefix = "AWS4-HMAC-SHA256 "
	authz := r.Header.Get("Authorization")
	if !strings.HasPrefix(authz, prefix) {
		return "", fmt.Errorf("not SigV4: %q", authz)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(authz, prefix), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/") // id/date/region/service/aws4_request
	if len(scope) != 5 {
		return "", fmt.Errorf("bad credential scope %q", fields["Credential"])
	}
	keyID, region, service := scope[0], scope[2], scope[3]
	secret, ok := s.lookup(keyID)
	if !ok {
		return "", fmt.Errorf("InvalidAccessKeyId %s", keyID)
	}
	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	if !strings.HasPrefix(payloadHash, "UNSIGNED") && !strings.HasPrefix(payloadHash, "STREAMING") {
		sum := sha256.Sum256(body)
		if hex.EncodeToString(sum[:]) != payloadHash {
			return "", fmt.Errorf("payload hash mismatch")
		}
	}
	signingTime, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "", fmt.Errorf("bad X-Amz-Date: %v", err)
	}
	// Rebuild the request from the signed headers only, and sign it again.
	req, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.ContentLength = 0
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		switch h {
		case "host":
		case "content-length":
			req.ContentLength = r.ContentLength
		default:
			req.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	signer := v4.NewSigner(func(o *v4.SignerOptions) {
		o.DisableURIPathEscaping = true
		o.DisableHeaderHoisting = true
	})
	creds := aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret, SessionToken: r.Header.Get("X-Amz-Security-Token")}
	if err := signer.SignHTTP(r.Context(), creds, req, payloadHash, service, region, signingTime); err != nil {
		return "", err
	}
	_, want, _ := strings.Cut(req.Header.Get("Authorization"), "Signature=")
	if want == "" || want != fields["Signature"] {
		return "", fmt.Errorf("SignatureDoesNotMatch for %s", keyID)
	}
	return keyID, nil
}

func (s *s3Verifier) verifiedBy(keyID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.verified[keyID]
}

func (s *s3Verifier) rejections() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rejected...)
}
