package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest/s3plane"
	"github.com/cwcreds/cwcreds/config"
)

// Demo defaults: the S3 plane's region (CoreWeave names regions after
// availability zones) and its bucket.
const (
	demoRegion = "US-EAST-04A"
	demoBucket = "demo"
)

// demo runs the daemon against the built-in emulator of the CoreWeave API
// and its S3 plane, with one profile, "demo", and prints what a user pastes
// to try it with an unmodified S3 client.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7911", "address the daemon listens on (loopback)")
	s3Listen := fs.String("s3-listen", "127.0.0.1:7912", "address the emulated S3 listens on (loopback)")
	delay := fs.Duration("s3-propagation-delay", 3*time.Second, "how long the emulated S3 refuses a new key with InvalidAccessKeyId, as CoreWeave's may (0 to 30s)")
	duration := fs.Duration("duration", time.Hour, "lifetime of the keys the demo profile mints (1m to 12h)")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn or error")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *delay < 0 || *delay > 30*time.Second {
		return &usageError{fmt.Errorf("demo: --s3-propagation-delay %s is not between 0 and 30s", *delay)}
	}

	dir, err := os.MkdirTemp("", "cwcreds-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	apiToken := "CW-SECRET-" + randomHex(16)
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(apiToken), 0o600); err != nil {
		return err
	}
	emu := cwapitest.New(cwapitest.Options{})
	emu.AddAPIToken(apiToken, cwapitest.Identity{Principal: "coreweave/demo-user", OrgID: "cwdemo"})
	emuLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("start emulator: %w", err)
	}
	emuSrv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go emuSrv.Serve(emuLn)
	defer emuSrv.Close()
	apiURL := "http://" + emuLn.Addr().String()

	// The S3 plane accepts exactly the keys the emulator minted.
	plane := s3plane.New(s3plane.Options{
		Keys: emu, PropagationDelay: *delay, Region: demoRegion,
		OnRefuse: func(r s3plane.Refusal) {
			fmt.Fprintf(stderr, "%s demo S3: refused %s %s signed by %q: %d %s: %s\n",
				time.Now().Format("15:04:05"), r.Method, r.Path, r.AccessKeyID, r.Status, r.Code, r.Message)
		},
	})
	if err := plane.CreateBucket(demoBucket); err != nil {
		return err
	}
	s3Ln, err := net.Listen("tcp", *s3Listen)
	if err != nil {
		return fmt.Errorf("start the emulated S3: %w", err)
	}
	s3Srv := &http.Server{Handler: plane, ReadHeaderTimeout: 5 * time.Second}
	go s3Srv.Serve(s3Ln)
	defer s3Srv.Close()
	s3URL := "http://" + s3Ln.Addr().String()

	node, _ := os.Hostname()
	cfg := &config.Config{
		ListenAddr: *listen,
		APIURL:     apiURL,
		LogLevel:   *logLevel,
		LogFormat:  "console",
		RuntimeDir: dir,
		NodeName:   node,
		// A refreshed key is served only once S3 accepts it.
		KeyWarmup: *delay + 2*time.Second,
		Profiles: []config.Profile{{
			Name:            "demo",
			EnvName:         "DEMO",
			Source:          "access-key",
			TokenFile:       tokenFile,
			Duration:        *duration,
			ClientTokenFile: filepath.Join(dir, "demo.token"),
		}},
	}
	if err := cfg.Validate(); err != nil {
		return configError(err)
	}
	ready := func(addr net.Addr, tokens map[string]string) {
		printDemo(stdout, demoInfo{
			apiURL: apiURL, s3URL: s3URL, daemon: addr.String(),
			token: tokens["demo"], tokenFile: cfg.Profiles[0].ClientTokenFile, delay: *delay,
		})
	}
	err = serve(ctx, cfg, stderr, ready)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

type demoInfo struct {
	apiURL, s3URL, daemon, token, tokenFile string
	delay                                   time.Duration
}

// printDemo prints what to paste. Every command in it is run as printed
// by README's "Try it" checks and cmd/cwcreds' demo test.
func printDemo(w io.Writer, d demoInfo) {
	fmt.Fprintf(w, `cwcreds demo: emulated CoreWeave API at %[1]s, emulated S3 at %[2]s (bucket %[3]q), daemon at http://%[4]s

Paste into another shell:

  export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://%[4]s/v1/credentials/demo
  export AWS_CONTAINER_AUTHORIZATION_TOKEN=%[5]s
  export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=%[6]s
  export AWS_EC2_METADATA_DISABLED=true
  export AWS_ENDPOINT_URL_S3=%[2]s
  export AWS_REGION=%[7]s AWS_DEFAULT_REGION=%[7]s

then use any S3 client; it never sees a key, cwcreds serves one:

  aws --endpoint-url "$AWS_ENDPOINT_URL_S3" s3 cp /etc/hostname s3://%[3]s/hello.txt
  aws --endpoint-url "$AWS_ENDPOINT_URL_S3" s3 ls s3://%[3]s/
  python3 -c 'import boto3,os; print(boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"]).get_object(Bucket="%[3]s", Key="hello.txt")["Body"].read())'
  curl -s http://%[4]s/v1/profiles

AWS CLI >= 2.13 or 1.29, boto3 >= 1.28 and aws-sdk-go-v2 read AWS_ENDPOINT_URL_S3 themselves
(--endpoint-url and endpoint_url= are for older ones). A client that gets no environment can
read the endpoint from ~/.aws/config instead (same versions):

  [default]
  region = %[7]s
  services = cwcreds-demo
  [services cwcreds-demo]
  s3 =
    endpoint_url = %[2]s

The emulated S3 refuses a key for %[8]s after it is minted (InvalidAccessKeyId), as CoreWeave's
may while a new key propagates.

Press Ctrl-C to stop.
`, d.apiURL, d.s3URL, demoBucket, d.daemon, d.token, d.tokenFile, demoRegion, d.delay)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (Go 1.24+): it aborts the program instead
	return hex.EncodeToString(b)
}
