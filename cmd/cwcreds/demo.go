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
	"github.com/cwcreds/cwcreds/config"
)

// demo runs the daemon against the built-in emulator of the CoreWeave API
// with one profile, "demo", and prints what a user pastes to try it.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7911", "address the daemon listens on (loopback)")
	duration := fs.Duration("duration", time.Hour, "lifetime of the keys the demo profile mints (1m to 12h)")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn or error")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
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

	node, _ := os.Hostname()
	cfg := &config.Config{
		ListenAddr: *listen,
		APIURL:     apiURL,
		LogLevel:   *logLevel,
		LogFormat:  "console",
		RuntimeDir: dir,
		NodeName:   node,
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
		uri := fmt.Sprintf("http://%s/v1/credentials/demo", addr)
		fmt.Fprintf(stdout, `cwcreds demo: emulated CoreWeave API at %s, daemon at http://%s

Paste into another shell, then use any AWS SDK or the AWS CLI:

  export AWS_CONTAINER_CREDENTIALS_FULL_URI=%s
  export AWS_CONTAINER_AUTHORIZATION_TOKEN=%s
  export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=%s
  export AWS_EC2_METADATA_DISABLED=true

  curl -s -H "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" "$AWS_CONTAINER_CREDENTIALS_FULL_URI"
  curl -s http://%s/v1/profiles

Press Ctrl-C to stop.
`, apiURL, addr, uri, tokens["demo"], cfg.Profiles[0].ClientTokenFile, addr)
	}
	err = serve(ctx, cfg, stderr, ready)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (Go 1.24+): it aborts the program instead
	return hex.EncodeToString(b)
}
