package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cwcreds/cwcreds/config"
)

// clientTimeout bounds one request to the daemon. A cold profile can make
// the daemon wait up to broker.MintTimeout (20 s) on upstream.
const clientTimeout = 30 * time.Second

// maxClientTokenFileBytes bounds what the client commands read from a
// client token file (the daemon refuses files over 4 KiB).
const maxClientTokenFileBytes = 4 << 10

// daemonTarget is where a client command finds a profile.
type daemonTarget struct {
	profile   string
	addr      string // host:port to dial
	tokenFile string
}

// uri is the profile's container-credentials URL.
func (t daemonTarget) uri() string {
	return "http://" + t.addr + "/v1/credentials/" + url.PathEscape(t.profile)
}

// clientFlags are the flags both client commands take.
type clientFlags struct {
	profile, addr, tokenFile string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.profile, "profile", "", "profile to use (required)")
	fs.StringVar(&c.addr, "addr", "", "daemon host:port (default: from CWCREDS_LISTEN_ADDR, as serve reads it)")
	fs.StringVar(&c.tokenFile, "token-file", "", "the profile's client token file (default: from the CWCREDS_* configuration, as serve reads it)")
}

// resolve finds the daemon's address and the profile's client token file
// from the same CWCREDS_* environment serve reads; --addr and --token-file
// override it, and with both the environment is not read at all.
func (c *clientFlags) resolve(cmd string, environ []string) (daemonTarget, error) {
	if c.profile == "" {
		return daemonTarget{}, &usageError{fmt.Errorf("%s: --profile is required", cmd)}
	}
	if !printableNoSpace(c.profile, 63) {
		// No profile can be named so (config: [a-z0-9-], 63 at most), and
		// env prints the name for a shell.
		return daemonTarget{}, &usageError{fmt.Errorf("%s: --profile %q is not a profile name", cmd, c.profile)}
	}
	t := daemonTarget{profile: c.profile, addr: c.addr, tokenFile: c.tokenFile}
	if t.addr == "" || t.tokenFile == "" {
		cfg, err := config.Load(environ)
		if err != nil {
			var ce *config.Error
			if errors.As(err, &ce) {
				return daemonTarget{}, &usageError{fmt.Errorf("%s reads the daemon's CWCREDS_* configuration to find its address and the "+
					"profile's client token file; run it with the daemon's environment (e.g. set -a; . /etc/cwcreds/cwcreds.env; set +a) "+
					"or pass --addr and --token-file. The configuration is invalid:\n%w", cmd, err)}
			}
			return daemonTarget{}, err
		}
		p, ok := cfg.Profile(c.profile)
		if !ok {
			names := make([]string, len(cfg.Profiles))
			for i, p := range cfg.Profiles {
				names[i] = p.Name
			}
			return daemonTarget{}, &usageError{fmt.Errorf("%s: no profile %q in CWCREDS_PROFILES (%s)", cmd, c.profile, strings.Join(names, ", "))}
		}
		if t.addr == "" {
			t.addr = cfg.LocalAddr()
		}
		if t.tokenFile == "" {
			t.tokenFile = p.ClientTokenFile
		}
	}
	addr, err := dialAddr(t.addr)
	if err != nil {
		return daemonTarget{}, &usageError{fmt.Errorf("%s: daemon address: %w", cmd, err)}
	}
	t.addr = addr
	return t, nil
}

// dialAddr turns a listen address into one a client on this host can use:
// an unspecified host (every interface) becomes 127.0.0.1, the one host
// every AWS SDK accepts in AWS_CONTAINER_CREDENTIALS_FULL_URI.
func dialAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port", listen)
	}
	if port == "0" || port == "" {
		return "", fmt.Errorf("%q has no fixed port (a daemon listening on port 0 cannot be found); pass --addr", listen)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// readClientTokenFile reads a profile's client token without creating it.
func readClientTokenFile(profile, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return "", fmt.Errorf("cannot read profile %q's client token file %s: permission denied; "+
				"only users the operator allowed to use this profile can read it", profile, path)
		}
		return "", fmt.Errorf("cannot read profile %q's client token file: %w (is the daemon running? it creates the file at start-up)", profile, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxClientTokenFileBytes+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("read client token file %s: %w", path, err)
	case len(b) == 0:
		return "", fmt.Errorf("client token file %s is empty", path)
	case len(b) > maxClientTokenFileBytes:
		return "", fmt.Errorf("client token file %s is larger than %d bytes", path, maxClientTokenFileBytes)
	case strings.ContainsAny(string(b), "\r\n"):
		return "", fmt.Errorf("client token file %s contains a newline, which AWS SDKs refuse; rewrite it without one", path)
	}
	return string(b), nil
}

// servedKey is the daemon's container-credentials answer.
type servedKey struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
}

// fetchKey asks the daemon for the profile's key, exactly as an SDK does.
func fetchKey(ctx context.Context, t daemonTarget) (*servedKey, error) {
	token, err := readClientTokenFile(t.profile, t.tokenFile)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.uri(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", token)
	// Only to a socket owned by root, the caller or the token file's owner.
	resp, err := daemonHTTPClient(trustFor(t.tokenFile), clientTimeout).Do(req)
	if err != nil {
		return nil, fmt.Errorf("cwcreds daemon not reachable at http://%s (is `cwcreds serve` running, with this CWCREDS_LISTEN_ADDR?): %w", t.addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("read the daemon's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Code, Message string }
		if json.Unmarshal(body, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(body))
		}
		return nil, fmt.Errorf("cwcreds daemon at %s refused profile %q: HTTP %d %s: %s", t.addr, t.profile, resp.StatusCode, e.Code, e.Message)
	}
	var k servedKey
	if err := json.Unmarshal(body, &k); err != nil {
		return nil, fmt.Errorf("the daemon's answer is not a key: %w", err)
	}
	if err := k.validate(); err != nil {
		return nil, fmt.Errorf("cwcreds daemon at %s answered profile %q with an unusable key, refused: %w", t.addr, t.profile, err)
	}
	return &k, nil
}

// Limits of a served key's fields. The broker refuses upstream keys beyond
// the same limits (broker.newCredentials); the client checks again because
// it cannot know it is talking to the real daemon, and its output is fed to
// eval (env) or an SDK (credential-process).
const (
	maxServedKeyID  = 128
	maxServedSecret = 1024
	maxServedToken  = 4096
)

// validate checks every field of the daemon's answer strictly: the key id
// is 1..128 of [A-Za-z0-9._-]; the secret and the token are printable ASCII
// without spaces, '"' or '\' (the token may be empty); the expiration is an
// RFC 3339 timestamp. So no field can hold a newline, a control character
// or anything a shell comment would end at. Its errors never quote the
// fields: the secret must not reach stderr.
func (k *servedKey) validate() error {
	switch {
	case !validKeyID(k.AccessKeyID):
		return fmt.Errorf("AccessKeyId is empty, longer than %d or not [A-Za-z0-9._-]", maxServedKeyID)
	case k.SecretAccessKey == "" || !printableNoSpace(k.SecretAccessKey, maxServedSecret):
		return fmt.Errorf("SecretAccessKey is empty, longer than %d or holds a space, quote, backslash or non-printable character", maxServedSecret)
	case k.Token != "" && !printableNoSpace(k.Token, maxServedToken):
		return fmt.Errorf("the Token field is longer than %d or holds a space, quote, backslash or non-printable character", maxServedToken)
	case !validExpiration(k.Expiration):
		return errors.New("the Expiration field is not an RFC 3339 timestamp")
	}
	return nil
}

func validKeyID(s string) bool {
	if s == "" || len(s) > maxServedKeyID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// printableNoSpace accepts at most max bytes of printable ASCII other than
// space, '"' and '\' (as the broker accepts from upstream).
func printableNoSpace(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// validExpiration accepts an RFC 3339 timestamp of at most 40 bytes made
// only of digits and "-:.TZ+".
func validExpiration(s string) bool {
	if s == "" || len(s) > 40 || strings.Trim(s, "0123456789-:.TZ+") != "" {
		return false
	}
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

// processCredentials is the credential_process output. SessionToken is
// omitted when empty: every SDK treats it as optional, and cwcreds keys are
// plain access keys, which S3 refuses with a session token.
type processCredentials struct {
	Version         int    `json:"Version"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	SessionToken    string `json:"SessionToken,omitempty"`
	Expiration      string `json:"Expiration"`
}

// credentialProcessCmd prints the profile's key as credential_process JSON.
// Errors go to stderr (SDKs show it) and exit 1; no secret is ever written
// there.
func credentialProcessCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("credential-process", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	t, err := cf.resolve("credential-process", environ)
	if err != nil {
		return err
	}
	k, err := fetchKey(ctx, t)
	if err != nil {
		return err
	}
	out, err := json.Marshal(processCredentials{
		Version: 1, AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey,
		SessionToken: k.Token, Expiration: k.Expiration,
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// envCmd prints the export lines that point AWS SDKs at a profile:
// eval "$(cwcreds env --profile training)".
func envCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("env", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	endpoint := fs.String("s3-endpoint", "", "also export AWS_ENDPOINT_URL_S3, e.g. https://cwobject.com")
	region := fs.String("region", "", "also export AWS_REGION and AWS_DEFAULT_REGION, e.g. the availability zone US-EAST-04A")
	keys := fs.Bool("keys", false, "export the current key itself (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) for tools that cannot "+
		"use the container endpoint, such as s3cmd; it stops working when it expires, so run this again before then")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	t, err := cf.resolve("env", environ)
	if err != nil {
		return err
	}
	// The exports send the token to whoever listens at t.addr: refuse a
	// socket another user holds (the daemon being down is fine).
	if err := trustFor(t.tokenFile).check(t.addr, false); err != nil {
		return err
	}
	var b strings.Builder
	export := func(name, value string) { fmt.Fprintf(&b, "export %s=%s\n", name, shellQuote(value)) }
	if *keys {
		k, err := fetchKey(ctx, t)
		if err != nil {
			return err
		}
		// Every value is validated (fetchKey, resolve) and cannot end the
		// comment; it is quoted all the same.
		fmt.Fprintf(&b, "# cwcreds profile %s: key %s, valid until %s; run this again before then\n",
			shellQuote(t.profile), shellQuote(k.AccessKeyID), shellQuote(k.Expiration))
		export("AWS_ACCESS_KEY_ID", k.AccessKeyID)
		export("AWS_SECRET_ACCESS_KEY", k.SecretAccessKey)
		b.WriteString("unset AWS_SESSION_TOKEN AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\n")
	} else {
		token, err := readClientTokenFile(t.profile, t.tokenFile)
		if err != nil {
			return err
		}
		export("AWS_CONTAINER_CREDENTIALS_FULL_URI", t.uri())
		// Both: older clients (Debian's AWS CLI 2.9, botocore < 1.32,
		// rclone 1.60) read only the variable, newer ones prefer the file.
		export("AWS_CONTAINER_AUTHORIZATION_TOKEN", token)
		// object_store uses FULL_URI only together with the file (it
		// never reads the env token) and otherwise falls back to IMDS.
		export("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", t.tokenFile)
		warnShadowing(environ, stderr)
	}
	if *endpoint != "" {
		u, err := url.Parse(*endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &usageError{fmt.Errorf("env: --s3-endpoint %q is not an http(s) URL such as https://cwobject.com", *endpoint)}
		}
		export("AWS_ENDPOINT_URL_S3", *endpoint)
	}
	if *region != "" {
		export("AWS_REGION", *region)
		export("AWS_DEFAULT_REGION", *region) // botocore and the AWS CLI v1 read only this one
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

// shadowingVars are variables that, set in a shell, make AWS SDKs ignore
// the container endpoint that env exports, with the reason for each.
var shadowingVars = []struct{ name, why string }{
	{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "wins over AWS_CONTAINER_CREDENTIALS_FULL_URI in botocore, the CRT, the C++, Java and minio-go SDKs"},
	{"AWS_ACCESS_KEY_ID", "environment keys come before the container endpoint in every SDK's chain"},
	{"AWS_PROFILE", "a profile's keys or credential_process come before the container endpoint in every SDK's chain"},
	{"AWS_WEB_IDENTITY_TOKEN_FILE", "web identity (with AWS_ROLE_ARN; minio-go needs only the file) comes before the container endpoint in every SDK's chain"},
}

// warnShadowing tells on stderr (never in the eval'd output) which
// variables of the caller's environment would make clients bypass cwcreds.
func warnShadowing(environ []string, stderr io.Writer) {
	set := make(map[string]bool)
	for _, kv := range environ {
		if name, v, ok := strings.Cut(kv, "="); ok && v != "" {
			set[name] = true
		}
	}
	var names []string
	for _, v := range shadowingVars {
		if set[v.name] {
			fmt.Fprintf(stderr, "cwcreds env: warning: %s is set: %s; unset it to use cwcreds\n", v.name, v.why)
			names = append(names, v.name)
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(stderr, "cwcreds env: to fix: unset %s\n", strings.Join(names, " "))
	}
}

// shellQuote quotes s for a POSIX shell: in single quotes, each embedded
// quote written as quote, backslash, quote, quote. It is the one quoting
// helper for everything env prints. Inside a '#' comment quotes mean
// nothing: only values that hold no newline may go there.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
