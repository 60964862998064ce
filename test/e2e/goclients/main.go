// Command goclients holds the end-to-end suite's (scripts/e2e) Go clients
// that are not aws-sdk-go-v2: minio-go v7 (as restic, mc and many Go tools
// use it) and aws-sdk-go v1 (as s5cmd, goofys and JuiceFS <= 1.2 do). It is
// its own module so that these SDKs stay out of cwcreds' go.mod.
//
//	goclients version
//	goclients minio-iam   BUCKET KEY FILE  minio-go's IAM provider alone (container endpoint from the environment)
//	goclients minio-chain BUCKET KEY FILE  minio-go's chain as restic builds it: EnvAWS, EnvMinio, FileAWSCredentials, FileMinioClient, IAM
//	goclients minio-imds  BUCKET KEY FILE  minio-go's IAM provider with IAM.Endpoint = E2E_IMDS_ENDPOINT (IMDSv2; minio-go reads no variable for it)
//	goclients awsv1       BUCKET KEY FILE  aws-sdk-go v1's default chain (session.NewSession)
//
// Each lists the bucket, uploads FILE, downloads it, compares it byte for
// byte and prints "ok key=ACCESS_KEY_ID bytes=N". The S3 endpoint comes from
// E2E_ENDPOINT (http://host:port), the region from AWS_REGION; addressing is
// path-style.
package main

//lint:file-ignore SA1019 aws-sdk-go v1 is deprecated; it is the client under test (s5cmd, goofys and JuiceFS <= 1.2 still ship it)

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "goclients:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 1 && args[0] == "version" {
		fmt.Println(versions())
		return nil
	}
	if len(args) != 4 {
		return errors.New("usage: goclients version | minio-iam|minio-chain|minio-imds|awsv1 BUCKET KEY FILE")
	}
	data, err := os.ReadFile(args[3])
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	endpoint, err := url.Parse(os.Getenv("E2E_ENDPOINT"))
	if err != nil || endpoint.Host == "" {
		return fmt.Errorf("E2E_ENDPOINT %q is not a URL", os.Getenv("E2E_ENDPOINT"))
	}
	switch args[0] {
	case "minio-iam":
		// Endpoint "" makes the provider read the AWS_* container variables.
		return minioRoundtrip(ctx, credentials.NewIAM(""), endpoint, args[1], args[2], data)
	case "minio-imds":
		// No environment variable moves minio-go's instance metadata
		// endpoint: only the IAM.Endpoint field does.
		ep := os.Getenv("E2E_IMDS_ENDPOINT")
		if ep == "" {
			return errors.New("minio-imds needs E2E_IMDS_ENDPOINT")
		}
		return minioRoundtrip(ctx, credentials.NewIAM(ep), endpoint, args[1], args[2], data)
	case "minio-chain":
		return minioRoundtrip(ctx, credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.EnvMinio{},
			&credentials.FileAWSCredentials{},
			&credentials.FileMinioClient{},
			&credentials.IAM{Client: &http.Client{Transport: http.DefaultTransport}},
		}), endpoint, args[1], args[2], data)
	case "awsv1":
		return awsV1Roundtrip(endpoint, args[1], args[2], data)
	}
	return fmt.Errorf("unknown client %q", args[0])
}

func minioRoundtrip(ctx context.Context, creds *credentials.Credentials, endpoint *url.URL, bucket, key string, data []byte) error {
	v, err := creds.GetWithContext(&credentials.CredContext{Client: http.DefaultClient})
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	c, err := minio.New(endpoint.Host, &minio.Options{
		Creds: creds, Secure: endpoint.Scheme == "https", Region: os.Getenv("AWS_REGION"), BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return err
	}
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{MaxKeys: 10}) {
		if o.Err != nil {
			return fmt.Errorf("list: %w", o.Err)
		}
	}
	if _, err := c.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	obj, err := c.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer obj.Close()
	got, err := io.ReadAll(obj)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("downloaded %d bytes differ from the %d uploaded", len(got), len(data))
	}
	fmt.Printf("ok key=%s bytes=%d token=%q\n", v.AccessKeyID, len(got), v.SessionToken)
	return nil
}

func awsV1Roundtrip(endpoint *url.URL, bucket, key string, data []byte) error {
	sess, err := session.NewSession(&aws.Config{
		Endpoint: aws.String(endpoint.String()), S3ForcePathStyle: aws.Bool(true),
	})
	if err != nil {
		return err
	}
	v, err := sess.Config.Credentials.Get()
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	c := s3.New(sess)
	if _, err := c.ListObjectsV2(&s3.ListObjectsV2Input{Bucket: &bucket}); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if _, err := c.PutObject(&s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(data)}); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	out, err := c.GetObject(&s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer out.Body.Close()
	got, err := io.ReadAll(out.Body)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("downloaded %d bytes differ from the %d uploaded", len(got), len(data))
	}
	fmt.Printf("ok key=%s bytes=%d provider=%s\n", v.AccessKeyID, len(got), v.ProviderName)
	return nil
}

// versions names the SDK versions built in, e.g. "minio-go v7.4.1, aws-sdk-go v1.55.8".
func versions() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var out []string
	for _, d := range bi.Deps {
		switch d.Path {
		case "github.com/minio/minio-go/v7":
			out = append(out, "minio-go "+d.Version)
		case "github.com/aws/aws-sdk-go":
			out = append(out, "aws-sdk-go "+d.Version)
		}
	}
	return strings.Join(out, ", ")
}
