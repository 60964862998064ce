package s3plane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest/s3plane"
)

const (
	region   = "US-EAST-04A"
	bucket   = "demo"
	apiToken = "CW-SECRET-s3plane-test"
)

// clock is the emulator's and the plane's injected clock. It starts at the
// real time, because the SDK signs with the real time and the plane
// refuses a request signed more than 15 minutes away from its clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type rig struct {
	t     *testing.T
	clock *clock
	emu   *cwapitest.Emulator
	api   *httptest.Server
	plane *s3plane.Plane
	s3    *httptest.Server

	mu       sync.Mutex
	seen     []string // x-amz-content-sha256 of every request the plane got
	hosts    []string // Host of every request
	refusals []s3plane.Refusal
}

func newRig(t *testing.T, tls bool) *rig {
	t.Helper()
	rg := &rig{t: t, clock: &clock{now: time.Now().UTC().Truncate(time.Second)}}
	rg.emu = cwapitest.New(cwapitest.Options{Now: rg.clock.Now})
	rg.emu.AddAPIToken(apiToken, cwapitest.Identity{Principal: "coreweave/test", OrgID: "cwtest"})
	rg.api = httptest.NewServer(rg.emu)
	t.Cleanup(rg.api.Close)
	rg.plane = s3plane.New(s3plane.Options{Keys: rg.emu, Now: rg.clock.Now, Region: region, OnRefuse: func(r s3plane.Refusal) {
		rg.mu.Lock()
		defer rg.mu.Unlock()
		rg.refusals = append(rg.refusals, r)
	}})
	if err := rg.plane.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rg.mu.Lock()
		rg.seen = append(rg.seen, r.Header.Get("X-Amz-Content-Sha256"))
		rg.hosts = append(rg.hosts, r.Host)
		rg.mu.Unlock()
		rg.plane.ServeHTTP(w, r)
	})
	if tls {
		rg.s3 = httptest.NewTLSServer(h)
	} else {
		rg.s3 = httptest.NewServer(h)
	}
	t.Cleanup(rg.s3.Close)
	return rg
}

// mint mints a key through the emulator's API, as cwcreds does.
func (rg *rig) mint(d time.Duration) cwapitest.Key {
	rg.t.Helper()
	body := strings.NewReader(`{"durationSeconds":` + jsonInt(int(d/time.Second)) + `}`)
	req, _ := http.NewRequest(http.MethodPost, rg.api.URL+"/v1/cwobject/access-key", body)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		rg.t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply struct{ AccessKeyID string }
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil || resp.StatusCode != http.StatusOK {
		rg.t.Fatalf("mint: %s %v", resp.Status, err)
	}
	k, ok := rg.emu.Key(reply.AccessKeyID)
	if !ok {
		rg.t.Fatalf("minted key %s unknown to the emulator", reply.AccessKeyID)
	}
	return k
}

func jsonInt(n int) string { b, _ := json.Marshal(n); return string(b) }

func (rg *rig) revoke(keyID string) {
	rg.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, rg.api.URL+"/v1/cwobject/revoke-access-key/access-key", strings.NewReader(`{"accessKey":"`+keyID+`"}`))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		rg.t.Fatalf("revoke: %v %v", resp, err)
	}
	resp.Body.Close()
}

// client is an aws-sdk-go-v2 S3 client signing with id and secret.
func (rg *rig) client(id, secret string, opts ...func(*s3.Options)) *s3.Client {
	return s3.New(s3.Options{
		Region:           region,
		BaseEndpoint:     aws.String(rg.s3.URL),
		UsePathStyle:     true,
		Credentials:      credentials.NewStaticCredentialsProvider(id, secret, ""),
		HTTPClient:       rg.s3.Client(),
		RetryMaxAttempts: 1,
	}, opts...)
}

func (rg *rig) payloadHashes() []string {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	return append([]string(nil), rg.seen...)
}

// wantRefused asserts err is an S3 API error with the code, and a 403.
func wantRefused(t *testing.T, what string, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	var re interface{ HTTPStatusCode() int }
	if !errors.As(err, &ae) || ae.ErrorCode() != code || !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden {
		t.Errorf("%s: want 403 %s, got %v", what, code, err)
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, false)
	list := func(c *s3.Client) error {
		_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
		return err
	}

	good := rg.mint(time.Hour)
	if err := list(rg.client(good.AccessKeyID, good.SecretKey)); err != nil {
		t.Fatalf("a fresh minted key: %v", err)
	}

	wantRefused(t, "unknown key", list(rg.client("CWNEVERMINTED0000", good.SecretKey)), "InvalidAccessKeyId")
	wantRefused(t, "wrong secret", list(rg.client(good.AccessKeyID, good.SecretKey+"x")), "SignatureDoesNotMatch")

	short := rg.mint(2 * time.Minute)
	if err := list(rg.client(short.AccessKeyID, short.SecretKey)); err != nil {
		t.Fatalf("a 2-minute key before its expiry: %v", err)
	}
	rg.clock.Advance(2 * time.Minute)
	wantRefused(t, "expired key", list(rg.client(short.AccessKeyID, short.SecretKey)), "ExpiredToken")

	revoked := rg.mint(time.Hour)
	rg.revoke(revoked.AccessKeyID)
	wantRefused(t, "revoked key", list(rg.client(revoked.AccessKeyID, revoked.SecretKey)), "AccessDenied")

	rg.plane.SetPropagationDelay(5 * time.Second)
	young := rg.mint(time.Hour)
	wantRefused(t, "key younger than the propagation delay", list(rg.client(young.AccessKeyID, young.SecretKey)), "InvalidAccessKeyId")
	rg.clock.Advance(4 * time.Second)
	wantRefused(t, "key 4s old, delay 5s", list(rg.client(young.AccessKeyID, young.SecretKey)), "InvalidAccessKeyId")
	rg.clock.Advance(time.Second)
	if err := list(rg.client(young.AccessKeyID, young.SecretKey)); err != nil {
		t.Errorf("key as old as the propagation delay: %v", err)
	}

	rg.clock.Advance(16 * time.Minute)
	wantRefused(t, "request signed 16 minutes before the plane's clock", list(rg.client(good.AccessKeyID, good.SecretKey)), "RequestTimeTooSkewed")

	rg.mu.Lock()
	last := rg.refusals[len(rg.refusals)-1]
	n := len(rg.refusals)
	rg.mu.Unlock()
	if n != 7 || last.AccessKeyID != good.AccessKeyID || last.Code != "RequestTimeTooSkewed" || last.Status != http.StatusForbidden || last.Path != "/"+bucket {
		t.Errorf("OnRefuse: %d calls, the last %+v", n, last)
	}

	st := rg.plane.Stats()
	want := map[string]int{"InvalidAccessKeyId": 3, "SignatureDoesNotMatch": 1, "ExpiredToken": 1, "AccessDenied": 1, "RequestTimeTooSkewed": 1}
	for code, n := range want {
		if st.Refused[code] != n {
			t.Errorf("Stats.Refused[%s] = %d, want %d (all: %v)", code, st.Refused[code], n, st.Refused)
		}
	}
	if st.AcceptedByKey[good.AccessKeyID] != 1 || st.AcceptedByKey[young.AccessKeyID] != 1 {
		t.Errorf("Stats.AcceptedByKey = %v", st.AcceptedByKey)
	}
}

// TestErrorBody checks the XML an S3 client reads, on the wire.
func TestErrorBody(t *testing.T) {
	rg := newRig(t, false)
	resp, err := http.Get(rg.s3.URL + "/" + bucket + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var got struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string
		Message   string
		RequestID string `xml:"RequestId"`
	}
	if err := xml.Unmarshal(body, &got); err != nil || resp.StatusCode != http.StatusForbidden || got.Code != "AccessDenied" ||
		got.Message == "" || got.RequestID == "" || resp.Header.Get("x-amz-request-id") != got.RequestID ||
		resp.Header.Get("Content-Type") != "application/xml" {
		t.Errorf("anonymous GET: %s %s %q (%v)", resp.Status, resp.Header, body, err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestObjectsAndBuckets(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, false)
	k := rg.mint(time.Hour)
	c := rg.client(k.AccessKeyID, k.SecretKey)

	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("second")}); err != nil {
		t.Fatalf("CreateBucket: %v", err)
	}
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("second")}); err != nil {
		t.Fatalf("HeadBucket: %v", err)
	}
	lb, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
	if err != nil || len(lb.Buckets) != 2 {
		t.Fatalf("ListBuckets: %v %+v", err, lb)
	}
	data := randomBytes(t, 100_000)
	for _, key := range []string{"a/b c+d~e.bin", "a/plain"} {
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("second"), Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
			t.Fatalf("PutObject %q: %v", key, err)
		}
	}
	ho, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("second"), Key: aws.String("a/b c+d~e.bin")})
	if err != nil || aws.ToInt64(ho.ContentLength) != int64(len(data)) {
		t.Fatalf("HeadObject: %v %+v", err, ho)
	}
	lo, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("second"), Prefix: aws.String("a/")})
	if err != nil || len(lo.Contents) != 2 {
		t.Fatalf("ListObjectsV2: %v %+v", err, lo)
	}
	get, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("second"), Key: aws.String("a/b c+d~e.bin")})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	got, _ := io.ReadAll(get.Body)
	get.Body.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("GetObject returned %d other bytes", len(got))
	}
	if len(get.Metadata) > 0 {
		t.Errorf("GetObject metadata %v: signing headers leaked into metadata", get.Metadata)
	}
	for _, key := range []string{"a/b c+d~e.bin", "a/plain"} {
		if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("second"), Key: aws.String(key)}); err != nil {
			t.Fatalf("DeleteObject: %v", err)
		}
	}
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("second"), Key: aws.String("a/plain")}); err == nil {
		t.Fatal("HeadObject after DeleteObject succeeded")
	}
	if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("second")}); err != nil {
		t.Fatalf("DeleteBucket: %v", err)
	}
	var nsb *types.NotFound
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("second")}); !errors.As(err, &nsb) {
		t.Fatalf("HeadBucket after DeleteBucket: %v", err)
	}
	for _, h := range rg.payloadHashes() {
		if strings.HasPrefix(h, "STREAMING") || h == "" {
			t.Errorf("over plain HTTP the SDK signs payload hashes, got %q", h)
		}
	}
}

func TestMultipartUpload(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, false)
	k := rg.mint(time.Hour)
	c := rg.client(k.AccessKeyID, k.SecretKey)
	parts := [][]byte{randomBytes(t, 5<<20), randomBytes(t, 1234)}
	up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("big")})
	if err != nil {
		t.Fatalf("CreateMultipartUpload: %v", err)
	}
	var done []types.CompletedPart
	for i, p := range parts {
		n := int32(i + 1)
		out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String("big"), UploadId: up.UploadId, PartNumber: &n, Body: bytes.NewReader(p)})
		if err != nil {
			t.Fatalf("UploadPart %d: %v", n, err)
		}
		done = append(done, types.CompletedPart{ETag: out.ETag, PartNumber: &n})
	}
	if _, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String("big"), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done}}); err != nil {
		t.Fatalf("CompleteMultipartUpload: %v", err)
	}
	get, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(get.Body)
	get.Body.Close()
	if !bytes.Equal(got, append(append([]byte(nil), parts[0]...), parts[1]...)) {
		t.Fatalf("the completed object is %d bytes, not the two parts", len(got))
	}
}

// TestTrailerChecksums: over HTTPS aws-sdk-go-v2 sends PutObject and
// UploadPart as STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer.
func TestTrailerChecksums(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, true)
	k := rg.mint(time.Hour)
	data := randomBytes(t, 300_000)
	for _, alg := range []types.ChecksumAlgorithm{"", types.ChecksumAlgorithmCrc32c, types.ChecksumAlgorithmSha256, types.ChecksumAlgorithmCrc64nvme, types.ChecksumAlgorithmSha1} {
		c := rg.client(k.AccessKeyID, k.SecretKey)
		key := "trailer-" + string(alg)
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data), ChecksumAlgorithm: alg}); err != nil {
			t.Fatalf("PutObject with %q: %v", alg, err)
		}
		get, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(get.Body)
		get.Body.Close()
		if !bytes.Equal(got, data) {
			t.Fatalf("%q: got %d other bytes back", alg, len(got))
		}
	}
	count := map[string]int{}
	for _, h := range rg.payloadHashes() {
		count[h]++
	}
	// The default (a seekable body, no algorithm named) is UNSIGNED-PAYLOAD
	// with an x-amz-checksum-crc32 header; a named algorithm, a trailer.
	if count["STREAMING-UNSIGNED-PAYLOAD-TRAILER"] != 4 || count["UNSIGNED-PAYLOAD"] != 1 {
		t.Fatalf("payload hashes of the 5 PUTs and 5 GETs: %v", rg.payloadHashes())
	}

	// A trailer checksum that does not match the body is refused: a client
	// whose transport corrupts the body (here, an altered trailer) learns it.
	c := rg.client(k.AccessKeyID, k.SecretKey, func(o *s3.Options) {
		o.HTTPClient = corruptTrailer{rg.s3.Client()}
	})
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("corrupt"), Body: bytes.NewReader(data), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "BadDigest" {
		t.Fatalf("corrupted trailer checksum: want BadDigest, got %v", err)
	}

	// Over plain HTTP the SDK signs the payload's SHA-256: an altered body
	// is refused.
	plain := newRig(t, false)
	k = plain.mint(time.Hour)
	c = plain.client(k.AccessKeyID, k.SecretKey, func(o *s3.Options) {
		o.HTTPClient = corruptBody{plain.s3.Client()}
	})
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("corrupt"), Body: bytes.NewReader(data)})
	if !errors.As(err, &ae) || ae.ErrorCode() != "XAmzContentSHA256Mismatch" {
		t.Fatalf("body not matching its signed SHA-256: want XAmzContentSHA256Mismatch, got %v", err)
	}
}

// corruptBody alters the first byte of every PUT body.
type corruptBody struct{ c *http.Client }

func (cb corruptBody) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Method == http.MethodPut {
		b, _ := io.ReadAll(r.Body)
		b[0] ^= 0xff
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	return cb.c.Do(r)
}

// corruptTrailer flips the value of the x-amz-checksum-crc32 trailer.
type corruptTrailer struct{ c *http.Client }

func (ct corruptTrailer) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Header.Get("X-Amz-Trailer") != "" {
		b, _ := io.ReadAll(r.Body)
		const name = "x-amz-checksum-crc32:"
		if i := bytes.Index(b, []byte(name)); i >= 0 {
			v := b[i+len(name) : i+len(name)+4]
			if string(v) == "AAAA" {
				copy(v, "BBBB")
			} else {
				copy(v, "AAAA")
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	return ct.c.Do(r)
}

func TestPresignedGetAndPut(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, false)
	k := rg.mint(time.Hour)
	pc := s3.NewPresignClient(rg.client(k.AccessKeyID, k.SecretKey))
	data := randomBytes(t, 50_000)

	put, err := pc.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("presigned")}, s3.WithPresignExpires(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(put.Method, put.URL, bytes.NewReader(data))
	for h, v := range put.SignedHeader {
		if !strings.EqualFold(h, "host") {
			req.Header[h] = v
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("presigned PUT: %s", resp.Status)
	}

	get, err := pc.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("presigned")}, s3.WithPresignExpires(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(get.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("presigned GET: %s, %d bytes", resp.Status, len(got))
	}

	// A URL with its signature altered, and one past its expiry.
	bad := strings.Replace(get.URL, "X-Amz-Signature=", "X-Amz-Signature=0", 1)
	bad = bad[:len(bad)-1]
	resp, _ = http.Get(bad)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(readAll(resp), "<Code>SignatureDoesNotMatch</Code>") {
		t.Errorf("altered presigned URL: %s", resp.Status)
	}
	rg.clock.Advance(time.Minute)
	resp, _ = http.Get(get.URL)
	if body := readAll(resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Request has expired") {
		t.Errorf("presigned URL past X-Amz-Expires: %s %s", resp.Status, body)
	}
}

func readAll(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

// TestVirtualHosted: with a "localhost" endpoint and path style off, the
// SDK addresses <bucket>.localhost; the test client dials the plane for
// every host name, so nothing is resolved.
func TestVirtualHosted(t *testing.T) {
	ctx := context.Background()
	rg := newRig(t, false)
	k := rg.mint(time.Hour)
	addr := rg.s3.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	dial := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	c := rg.client(k.AccessKeyID, k.SecretKey, func(o *s3.Options) {
		o.BaseEndpoint = aws.String("http://localhost:" + port)
		o.UsePathStyle = false
		o.HTTPClient = dial
	})
	data := []byte("virtual-hosted")
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("dir/vh"), Body: bytes.NewReader(data)}); err != nil {
		t.Fatalf("virtual-hosted PutObject: %v", err)
	}
	lo, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil || len(lo.Contents) != 1 || aws.ToString(lo.Contents[0].Key) != "dir/vh" {
		t.Fatalf("virtual-hosted ListObjectsV2: %v %+v", err, lo)
	}
	rg.mu.Lock()
	hosts := append([]string(nil), rg.hosts...)
	rg.mu.Unlock()
	for _, h := range hosts {
		if h != bucket+".localhost:"+port {
			t.Errorf("request to Host %q: the SDK did not address the bucket by host", h)
		}
	}
	// The same object, path style.
	get, err := rg.client(k.AccessKeyID, k.SecretKey).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("dir/vh")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(get.Body)
	get.Body.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("path style read %q", got)
	}
}
