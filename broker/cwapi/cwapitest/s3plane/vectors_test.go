package s3plane

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// The examples of AWS's "Signature Calculations for the Authorization
// Header" and "Authenticating Requests: Using Query Parameters" and
// "Signature Calculation: Transfer Payload in Multiple Chunks" pages
// (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-*.html): signatures
// computed by AWS, independent of the signer the plane verifies with.
const (
	exampleKeyID  = "AKIAIOSFODNN7EXAMPLE"
	exampleSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	emptySHA256   = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

var exampleTime = time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)

type keyMap map[string]cwapitest.Key

func (m keyMap) Key(id string) (cwapitest.Key, bool) { k, ok := m[id]; return k, ok }

func examplePlane(t *testing.T) *Plane {
	t.Helper()
	keys := keyMap{exampleKeyID: {
		AccessKeyID: exampleKeyID, SecretKey: exampleSecret, Status: cwapitest.StatusActive,
		Created: exampleTime.Add(-time.Hour),
	}}
	p := New(Options{
		Keys: keys, Now: func() time.Time { return exampleTime },
		Region: "us-east-1", VirtualHostBases: []string{"s3.amazonaws.com"},
	})
	if err := p.CreateBucket("examplebucket"); err != nil {
		t.Fatal(err)
	}
	return p
}

func exampleAuth(signed, sig string) string {
	return "AWS4-HMAC-SHA256 Credential=" + exampleKeyID + "/20130524/us-east-1/s3/aws4_request,SignedHeaders=" + signed + ",Signature=" + sig
}

// s3err is an S3 XML error body.
type s3err struct {
	Code      string
	Message   string
	RequestID string `xml:"RequestId"`
}

func serve(p *Plane, r *http.Request) (*http.Response, string, s3err) {
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	resp := w.Result()
	body, _ := io.ReadAll(resp.Body)
	var e s3err
	xml.Unmarshal(body, &e)
	return resp, string(body), e
}

func TestAWSExampleHeaderSignatures(t *testing.T) {
	p := examplePlane(t)

	// PUT Object, virtual-hosted, a signed payload hash, a Date header
	// signed beside x-amz-date, and a '$' escaped in the path.
	put := httptest.NewRequest(http.MethodPut, "http://examplebucket.s3.amazonaws.com/test%24file.text", strings.NewReader("Welcome to Amazon S3."))
	put.Header.Set("Date", "Fri, 24 May 2013 00:00:00 GMT")
	put.Header.Set("X-Amz-Date", "20130524T000000Z")
	put.Header.Set("X-Amz-Storage-Class", "REDUCED_REDUNDANCY")
	put.Header.Set("X-Amz-Content-Sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
	put.Header.Set("Authorization", exampleAuth("date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
		"98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"))
	if resp, body, _ := serve(p, put); resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT: %s %s", resp.Status, body)
	}
	obj, err := p.backend.GetObject("examplebucket", "test$file.text", nil)
	if err != nil {
		t.Fatalf("the PUT stored nothing at test$file.text: %v", err)
	}
	got, _ := io.ReadAll(obj.Contents)
	if string(got) != "Welcome to Amazon S3." {
		t.Fatalf("stored %q", got)
	}
	if _, ok := obj.Metadata["X-Amz-Content-Sha256"]; ok {
		t.Errorf("signing headers were stored as object metadata: %v", obj.Metadata)
	}

	// GET Object with a Range, virtual-hosted.
	get := func(sig string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "http://examplebucket.s3.amazonaws.com/test.txt", nil)
		r.Header.Set("Range", "bytes=0-9")
		r.Header.Set("X-Amz-Content-Sha256", emptySHA256)
		r.Header.Set("X-Amz-Date", "20130524T000000Z")
		r.Header.Set("Authorization", exampleAuth("host;range;x-amz-content-sha256;x-amz-date", sig))
		return r
	}
	if resp, body, e := serve(p, get("f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")); resp.StatusCode != http.StatusNotFound || e.Code != "NoSuchKey" ||
		e.RequestID == "" || resp.Header.Get("x-amz-request-id") != e.RequestID {
		t.Errorf("GET test.txt (absent): want 404 NoSuchKey past authentication, with the request id, got %s %v %s", resp.Status, resp.Header, body)
	}
	resp, body, e := serve(p, get("f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb40"))
	if resp.StatusCode != http.StatusForbidden || e.Code != "SignatureDoesNotMatch" || e.RequestID == "" || resp.Header.Get("x-amz-request-id") != e.RequestID {
		t.Errorf("GET with a changed signature: want 403 SignatureDoesNotMatch with a RequestId, got %s %s", resp.Status, body)
	}

	// GET Bucket (list objects) with a query.
	list := httptest.NewRequest(http.MethodGet, "http://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J", nil)
	list.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	list.Header.Set("X-Amz-Date", "20130524T000000Z")
	list.Header.Set("Authorization", exampleAuth("host;x-amz-content-sha256;x-amz-date", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"))
	if resp, body, _ := serve(p, list); resp.StatusCode != http.StatusOK || !strings.Contains(body, "<ListBucketResult") {
		t.Errorf("list: %s %s", resp.Status, body)
	}
}

func TestAWSExamplePresignedURL(t *testing.T) {
	p := examplePlane(t)
	const u = "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
	if resp, body, e := serve(p, httptest.NewRequest(http.MethodGet, u+"aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404", nil)); resp.StatusCode != http.StatusNotFound || e.Code != "NoSuchKey" {
		t.Errorf("presigned GET: want 404 NoSuchKey past authentication, got %s %s", resp.Status, body)
	}
	if resp, body, e := serve(p, httptest.NewRequest(http.MethodGet, u+"aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d405", nil)); resp.StatusCode != http.StatusForbidden || e.Code != "SignatureDoesNotMatch" {
		t.Errorf("presigned GET, changed signature: want 403 SignatureDoesNotMatch, got %s %s", resp.Status, body)
	}
	late := New(Options{Keys: p.keys, Now: func() time.Time { return exampleTime.Add(24 * time.Hour) }})
	if resp, body, e := serve(late, httptest.NewRequest(http.MethodGet, u+"aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404", nil)); resp.StatusCode != http.StatusForbidden || e.Code != "AccessDenied" || e.Message != "Request has expired" {
		t.Errorf("presigned GET after X-Amz-Expires: want 403 AccessDenied Request has expired, got %s %s", resp.Status, body)
	}
}

// chunkedExample is AWS's STREAMING-AWS4-HMAC-SHA256-PAYLOAD example: 66560
// bytes of 'a' in chunks of 65536 and 1024 bytes.
func chunkedExample(sigs [3]string) *http.Request {
	var b bytes.Buffer
	fmt.Fprintf(&b, "10000;chunk-signature=%s\r\n%s\r\n", sigs[0], strings.Repeat("a", 65536))
	fmt.Fprintf(&b, "400;chunk-signature=%s\r\n%s\r\n", sigs[1], strings.Repeat("a", 1024))
	fmt.Fprintf(&b, "0;chunk-signature=%s\r\n\r\n", sigs[2])
	r := httptest.NewRequest(http.MethodPut, "http://s3.amazonaws.com/examplebucket/chunkObject.txt", &b)
	r.Header.Set("X-Amz-Date", "20130524T000000Z")
	r.Header.Set("X-Amz-Storage-Class", "REDUCED_REDUNDANCY")
	r.Header.Set("X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
	r.Header.Set("Content-Encoding", "aws-chunked")
	r.Header.Set("X-Amz-Decoded-Content-Length", "66560")
	r.Header.Set("Content-Length", "66824")
	r.Header.Set("Authorization", exampleAuth(
		"content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
		"4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"))
	return r
}

func TestAWSExampleChunkedUpload(t *testing.T) {
	sigs := [3]string{
		"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
		"0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
		"b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
	}
	p := examplePlane(t)
	r := chunkedExample(sigs)
	if r.ContentLength != 66824 {
		t.Fatalf("the example body is %d bytes, AWS's is 66824", r.ContentLength)
	}
	if resp, body, _ := serve(p, r); resp.StatusCode != http.StatusOK {
		t.Fatalf("chunked PUT: %s %s", resp.Status, body)
	}
	obj, err := p.backend.GetObject("examplebucket", "chunkObject.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(obj.Contents)
	if string(got) != strings.Repeat("a", 66560) {
		t.Fatalf("stored %d bytes, not the decoded 66560 'a's", len(got))
	}
	if ce := obj.Metadata["Content-Encoding"]; ce != "" {
		t.Errorf("stored Content-Encoding %q: aws-chunked must not survive decoding", ce)
	}

	// Each chunk's signature chains on the previous one: changing the
	// second (or the final, empty one) is refused.
	for i := 1; i < 3; i++ {
		bad := sigs
		bad[i] = strings.Replace(bad[i], bad[i][:1], "f", 1)
		if resp, body, e := serve(examplePlane(t), chunkedExample(bad)); resp.StatusCode != http.StatusForbidden || e.Code != "SignatureDoesNotMatch" {
			t.Errorf("chunk %d signature changed: want 403 SignatureDoesNotMatch, got %s %s", i, resp.Status, body)
		}
	}
}

// TestChecksumCheckValues: each algorithm's check value (the checksum of
// "123456789" in its catalogue entry), as S3 sends it: base64 of the
// big-endian digest.
func TestChecksumCheckValues(t *testing.T) {
	for alg, hexSum := range map[string]string{
		"crc32":     "cbf43926",
		"crc32c":    "e3069283",
		"crc64nvme": "ae8b14860a799888",
		"sha1":      "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
		"sha256":    "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225",
	} {
		sum, _ := hex.DecodeString(hexSum)
		h := http.Header{"X-Amz-Checksum-" + alg: {base64.StdEncoding.EncodeToString(sum)}}
		if serr := checkChecksums(h, nil, []byte("123456789")); serr != nil {
			t.Errorf("%s: %v", alg, serr)
		}
		if serr := checkChecksums(h, nil, []byte("123456780")); serr == nil || serr.code != "BadDigest" {
			t.Errorf("%s of other data: want BadDigest, got %v", alg, serr)
		}
	}
}

// TestMalformedAuth: refusals decided before any signature is computed.
func TestMalformedAuth(t *testing.T) {
	getAuth := func(mod func(r *http.Request)) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "http://examplebucket.s3.amazonaws.com/test.txt", nil)
		r.Header.Set("X-Amz-Content-Sha256", emptySHA256)
		r.Header.Set("X-Amz-Date", "20130524T000000Z")
		r.Header.Set("Authorization", exampleAuth("host;x-amz-content-sha256;x-amz-date", strings.Repeat("0", 64)))
		mod(r)
		return r
	}
	for _, c := range []struct {
		name   string
		req    *http.Request
		status int
		code   string
	}{
		{"anonymous", httptest.NewRequest(http.MethodGet, "http://s3.amazonaws.com/examplebucket/x", nil), 403, "AccessDenied"},
		{"SigV2 header", getAuth(func(r *http.Request) {
			r.Header.Set("Authorization", "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=")
		}), 400, "InvalidRequest"},
		{"SigV2 query", httptest.NewRequest(http.MethodGet, "http://s3.amazonaws.com/examplebucket/x?AWSAccessKeyId=A&Signature=s&Expires=1", nil), 400, "InvalidRequest"},
		{"header and query", getAuth(func(r *http.Request) { r.URL.RawQuery = "X-Amz-Signature=00" }), 400, "InvalidArgument"},
		{"no SignedHeaders", getAuth(func(r *http.Request) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+exampleKeyID+"/20130524/us-east-1/s3/aws4_request,Signature=00")
		}), 400, "AuthorizationHeaderMalformed"},
		{"short credential", getAuth(func(r *http.Request) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+exampleKeyID+"/20130524/us-east-1,SignedHeaders=host,Signature=00")
		}), 400, "AuthorizationHeaderMalformed"},
		{"other service", getAuth(func(r *http.Request) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+exampleKeyID+"/20130524/us-east-1/sts/aws4_request,SignedHeaders=host,Signature=00")
		}), 400, "AuthorizationHeaderMalformed"},
		{"scope date not X-Amz-Date", getAuth(func(r *http.Request) { r.Header.Set("X-Amz-Date", "20130525T000000Z") }), 400, "AuthorizationHeaderMalformed"},
		{"no x-amz-content-sha256", getAuth(func(r *http.Request) { r.Header.Del("X-Amz-Content-Sha256") }), 400, "InvalidRequest"},
		{"other region", getAuth(func(r *http.Request) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+exampleKeyID+"/20130524/eu-west-1/s3/aws4_request,SignedHeaders=host,Signature=00")
		}), 400, "AuthorizationHeaderMalformed"},
		{"unknown key", getAuth(func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), exampleKeyID, "CWNEVERMINTED000", 1))
		}), 403, "InvalidAccessKeyId"},
		{"presigned, no expiry", httptest.NewRequest(http.MethodGet, "http://s3.amazonaws.com/examplebucket/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-SignedHeaders=host&X-Amz-Signature=00", nil), 400, "AuthorizationQueryParametersError"},
		{"presigned, 8 days", httptest.NewRequest(http.MethodGet, "http://s3.amazonaws.com/examplebucket/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=691200&X-Amz-SignedHeaders=host&X-Amz-Signature=00", nil), 400, "AuthorizationQueryParametersError"},
		{"signed-trailer payload mode", signed(t, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", ""), 501, "NotImplemented"},
		{"a session token", signed(t, emptySHA256, "a-token"), 400, "InvalidToken"},
		{"payload not matching its hash", signed(t, strings.Repeat("ab", 32), ""), 400, "XAmzContentSHA256Mismatch"},
		{"payload hash neither hex nor a mode", signed(t, "SOMETHING", ""), 400, "InvalidArgument"},
	} {
		resp, body, e := serve(examplePlane(t), c.req)
		if resp.StatusCode != c.status || e.Code != c.code || e.RequestID == "" {
			t.Errorf("%s: want %d %s, got %s %s", c.name, c.status, c.code, resp.Status, body)
		}
	}
}

// signed is a PUT signed for the example key with aws-sdk-go-v2's signer,
// with the given payload hash and session token.
func signed(t *testing.T, payloadHash, token string) *http.Request {
	r := httptest.NewRequest(http.MethodPut, "http://s3.amazonaws.com/examplebucket/x", nil)
	r.Header.Set("X-Amz-Content-Sha256", payloadHash)
	creds := aws.Credentials{AccessKeyID: exampleKeyID, SecretAccessKey: exampleSecret, SessionToken: token}
	if err := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).
		SignHTTP(t.Context(), creds, r, payloadHash, "s3", "us-east-1", exampleTime); err != nil {
		t.Fatal(err)
	}
	return r
}
