// Command goclient is the aws-sdk-go-v2 client of the end-to-end suite
// (scripts/e2e). It takes credentials only from the SDK's default chain, so
// the environment decides between the container endpoint and IMDS.
//
//	goclient version
//	goclient roundtrip BUCKET KEY FILE   list, upload FILE, download it, compare byte for byte
//	goclient loop BUCKET SECONDS         one long-lived client: a small put+get every second;
//	                                     prints every access key id it signs with, exits 1 on any failed call
//	                                     (object keys E2E_LOOP_PREFIX/<i>, default go-loop)
//
// The S3 endpoint comes from AWS_ENDPOINT_URL_S3; addressing is path-style
// (E2E_PATH_STYLE=false for virtual-hosted).
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: goclient version|roundtrip|loop [args]")
	}
	if args[0] == "version" {
		fmt.Println(versions())
		return nil
	}
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return err
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = os.Getenv("E2E_PATH_STYLE") != "false"
	})
	switch {
	case args[0] == "roundtrip" && len(args) == 4:
		return roundtrip(ctx, cfg, client, args[1], args[2], args[3])
	case args[0] == "loop" && len(args) == 3:
		secs, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		return loop(ctx, cfg, client, args[1], time.Duration(secs)*time.Second)
	}
	return fmt.Errorf("bad arguments %q", args)
}

func roundtrip(ctx context.Context, cfg aws.Config, c *s3.Client, bucket, key, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if _, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket}); err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(data)}); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	got, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("downloaded %d bytes (sha256 %x), uploaded %d (sha256 %x)", len(got), sha256.Sum256(got), len(data), sha256.Sum256(data))
	}
	fmt.Printf("ok key=%s bytes=%d\n", creds.AccessKeyID, len(data))
	return nil
}

func loop(ctx context.Context, cfg aws.Config, c *s3.Client, bucket string, d time.Duration) error {
	deadline := time.Now().Add(d)
	prefix := os.Getenv("E2E_LOOP_PREFIX")
	if prefix == "" {
		prefix = "go-loop"
	}
	calls, failures := 0, 0
	var keys []string
	for i := 0; time.Now().Before(deadline); i++ {
		creds, err := cfg.Credentials.Retrieve(ctx)
		if err == nil && (len(keys) == 0 || keys[len(keys)-1] != creds.AccessKeyID) {
			keys = append(keys, creds.AccessKeyID)
			fmt.Printf("%s key %s\n", time.Now().UTC().Format("15:04:05"), creds.AccessKeyID)
		}
		key := fmt.Sprintf("%s/%d", prefix, i)
		body := []byte(strings.Repeat("x", 1024) + strconv.Itoa(i))
		calls += 2
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(body)}); err != nil {
			failures++
			fmt.Printf("%s put FAILED: %v\n", time.Now().UTC().Format("15:04:05"), err)
		} else if out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key}); err != nil {
			failures++
			fmt.Printf("%s get FAILED: %v\n", time.Now().UTC().Format("15:04:05"), err)
		} else {
			got, _ := io.ReadAll(out.Body)
			out.Body.Close()
			if !bytes.Equal(got, body) {
				failures++
				fmt.Printf("get returned other bytes\n")
			}
		}
		time.Sleep(time.Second)
	}
	fmt.Printf("calls=%d failures=%d keys=%d %s\n", calls, failures, len(keys), strings.Join(keys, ","))
	if failures > 0 {
		return fmt.Errorf("%d of %d calls failed", failures, calls)
	}
	return nil
}

// versions names the SDK modules this binary was built with.
func versions() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "aws-sdk-go-v2 (unknown)"
	}
	want := map[string]string{
		"github.com/aws/aws-sdk-go-v2":            "aws",
		"github.com/aws/aws-sdk-go-v2/config":     "config",
		"github.com/aws/aws-sdk-go-v2/service/s3": "s3",
	}
	var parts []string
	for _, dep := range info.Deps {
		if name, ok := want[dep.Path]; ok {
			parts = append(parts, name+" "+dep.Version)
		}
	}
	return "aws-sdk-go-v2 " + strings.Join(parts, ", ")
}
