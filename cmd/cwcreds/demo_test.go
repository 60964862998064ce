package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// TestDemoS3RoundTrip runs `cwcreds demo` and does what its output says
// with aws-sdk-go-v2, configured only from the printed exports: the
// container-credentials endpoint serves a key the emulated S3 accepts.
func TestDemoS3RoundTrip(t *testing.T) {
	clearEnv(t, "CWCREDS_")
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0", "--s3-propagation-delay", "0"}, nil, pw, io.Discard)
		pw.Close()
	}()
	exports := map[string]string{}
	var printed strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "export "); ok {
			for kv := range strings.FieldsSeq(rest) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					exports[k] = v
				}
			}
		}
		if strings.Contains(line, "Press Ctrl-C") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo returned %v after interrupt, want nil", err)
		}
	}()

	for _, k := range []string{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"} {
		if exports[k] == "" {
			t.Fatalf("demo printed no %s:\n%s", k, printed.String())
		}
	}
	for _, want := range []string{
		`aws --endpoint-url "$AWS_ENDPOINT_URL_S3" s3 cp /etc/hostname s3://demo/hello.txt`,
		`aws --endpoint-url "$AWS_ENDPOINT_URL_S3" s3 ls s3://demo/`,
		`endpoint_url = ` + exports["AWS_ENDPOINT_URL_S3"],
	} {
		if !strings.Contains(printed.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, printed.String())
		}
	}

	creds := endpointcreds.New(exports["AWS_CONTAINER_CREDENTIALS_FULL_URI"], func(o *endpointcreds.Options) {
		o.AuthorizationToken = exports["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
	})
	c := s3.New(s3.Options{
		Region:       exports["AWS_REGION"],
		BaseEndpoint: aws.String(exports["AWS_ENDPOINT_URL_S3"]),
		Credentials:  aws.NewCredentialsCache(creds),
		HTTPClient:   &http.Client{},
	})
	data := make([]byte, 6<<20) // two parts: 5 MiB and 1 MiB
	rand.Read(data)
	up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("demo"), Key: aws.String("big")})
	if err != nil {
		t.Fatalf("CreateMultipartUpload in the demo bucket: %v", err)
	}
	var parts []types.CompletedPart
	for i, p := range [][]byte{data[:5<<20], data[5<<20:]} {
		n := int32(i + 1)
		out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String("demo"), Key: aws.String("big"), UploadId: up.UploadId, PartNumber: &n, Body: bytes.NewReader(p)})
		if err != nil {
			t.Fatalf("UploadPart: %v", err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: &n})
	}
	if _, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String("demo"), Key: aws.String("big"), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		t.Fatalf("CompleteMultipartUpload: %v", err)
	}
	lo, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("demo")})
	if err != nil || len(lo.Contents) != 1 {
		t.Fatalf("ListObjectsV2: %v %+v", err, lo)
	}
	get, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("demo"), Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(get.Body)
	get.Body.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d other bytes", len(got))
	}

	// A key the daemon never served is refused.
	bad := s3.New(s3.Options{
		Region: exports["AWS_REGION"], BaseEndpoint: aws.String(exports["AWS_ENDPOINT_URL_S3"]),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "CWNOTMINTED00000", SecretAccessKey: "x"}, nil
		}),
	})
	if _, err := bad.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("demo")}); err == nil || !strings.Contains(err.Error(), "InvalidAccessKeyId") {
		t.Errorf("a key nobody minted: want InvalidAccessKeyId, got %v", err)
	}
}
