package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/config"
	"github.com/cwcreds/cwcreds/server"
)

// maxDaemonReply bounds what the admin commands read from the daemon.
const maxDaemonReply = 1 << 20

// statusCmd prints every profile's state from the running daemon's
// GET /v1/profiles, as a table or (--json) as the daemon's JSON. It fails
// (exit 1) when the daemon cannot be reached or any profile is unhealthy,
// so it works as a check command.
func statusCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the daemon's /v1/profiles JSON instead of a table")
	addr := fs.String("addr", "", "daemon host:port (default: CWCREDS_LISTEN_ADDR, else 127.0.0.1:791)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	d, err := newDaemonClient("status", *addr, "", environ)
	if err != nil {
		return err
	}
	raw, err := d.do(ctx, http.MethodGet, "/v1/profiles", "", nil)
	if err != nil {
		return err
	}
	var body struct {
		Profiles []broker.Status `json:"profiles"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return fmt.Errorf("the daemon at %s answered /v1/profiles with something other than its JSON: %v", d.addr, err)
	}
	if *asJSON {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		if _, err := buf.WriteTo(stdout); err != nil {
			return err
		}
	} else if err := printStatus(stdout, body.Profiles, time.Now()); err != nil {
		return err
	}
	var unhealthy []string
	for _, p := range body.Profiles {
		if !p.Healthy {
			unhealthy = append(unhealthy, p.Profile)
		}
	}
	if len(unhealthy) > 0 {
		return fmt.Errorf("%d of %d profiles unhealthy (no servable key): %s", len(unhealthy), len(body.Profiles), strings.Join(unhealthy, ", "))
	}
	return nil
}

// printStatus writes the status table: one row per profile, then the full
// reason of every unhealthy one.
func printStatus(w io.Writer, profiles []broker.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROFILE\tSOURCE\tSTATE\tPRINCIPAL\tKEY\tEXPIRES IN\tLAST REFRESH\tLAST ERROR")
	for _, p := range profiles {
		if w := p.Workload; w != nil {
			// A key per caller identity: counts, not one key.
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Profile, p.Source, "ok", "(per caller)",
				fmt.Sprintf("%d identities", w.Identities), "-", fmt.Sprintf("%d mints/h", w.MintsLastHour), "-")
			continue
		}
		state := "ok"
		if !p.Healthy {
			state = "UNHEALTHY"
		}
		lastErr := "-"
		if p.LastError != "" {
			lastErr = truncate(p.LastError, 60)
			if p.LastErrorAt != nil {
				lastErr = ago(now, *p.LastErrorAt) + ": " + lastErr
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Profile, p.Source, state, orDash(p.Principal),
			shownKeyID(p.AccessKeyID), expiresIn(now, p.Expiration), agoPtr(now, p.LastRefresh), lastErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range profiles {
		if !p.Healthy && p.Reason != "" {
			if _, err := fmt.Fprintf(w, "\n%s: %s\n", p.Profile, p.Reason); err != nil {
				return err
			}
		}
	}
	return printS3Checks(w, profiles)
}

// printS3Checks adds a line for every profile whose newest key S3 refused
// or could not be asked about (CWCREDS_S3_ENDPOINT), so an operator sees it
// before clients fail.
func printS3Checks(w io.Writer, profiles []broker.Status) error {
	for _, p := range profiles {
		key := p.AccessKeyID
		if p.WarmingAccessKeyID != "" {
			key = p.WarmingAccessKeyID
		}
		var line string
		switch p.S3Check {
		case "refused":
			line = fmt.Sprintf("S3 refuses key %s: %s (HTTP %d)", shownKeyID(key), orDash(p.S3ErrorCode), p.S3HTTPStatus)
		case "unanswered":
			line = fmt.Sprintf("S3 could not be asked whether it accepts key %s; it is served unchecked", shownKeyID(key))
		default:
			continue
		}
		if _, err := fmt.Fprintf(w, "\n%s: %s\n", p.Profile, line); err != nil {
			return err
		}
	}
	return nil
}

// shownKeyID shows a key id as its server.KeySuffix, "…WXYZ", or "-".
func shownKeyID(id string) string {
	switch suffix := server.KeySuffix(id); {
	case id == "":
		return "-"
	case suffix == id:
		return id
	default:
		return "…" + suffix
	}
}

func expiresIn(now time.Time, t *time.Time) string {
	if t == nil {
		return "-"
	}
	d := t.Sub(now)
	if d <= 0 {
		return "expired"
	}
	return d.Round(time.Second).String()
}

func agoPtr(now time.Time, t *time.Time) string {
	if t == nil {
		return "never"
	}
	return ago(now, *t)
}

func ago(now, t time.Time) string {
	return max(0, now.Sub(t)).Round(time.Second).String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// daemonClient calls the running daemon's HTTP API for the admin commands.
type daemonClient struct {
	addr string // host:port
	http *http.Client
}

// daemonTimeout bounds one admin call: a revoke makes two upstream calls,
// each bounded by broker.MintTimeout.
const daemonTimeout = 2*broker.MintTimeout + 5*time.Second

// newDaemonClient finds the daemon: --addr when given, else
// CWCREDS_LISTEN_ADDR as serve reads it (config.LoadLocal, which needs no
// profile configuration), else 127.0.0.1:791. It talks only to a socket
// owned by root, the caller, or the owner of the daemon's runtime
// directory or of tokenFile, the token it will send (see socketTrust).
func newDaemonClient(cmd, addr, tokenFile string, environ []string) (*daemonClient, error) {
	l, err := config.LoadLocal(environ)
	if err != nil {
		return nil, &usageError{fmt.Errorf("%s: %w", cmd, err)}
	}
	if addr == "" {
		addr = l.ListenAddr
	}
	dial, err := dialAddr(addr)
	if err != nil {
		return nil, &usageError{fmt.Errorf("%s: daemon address: %w", cmd, err)}
	}
	return &daemonClient{addr: dial, http: daemonHTTPClient(trustFor(l.RuntimeDir, tokenFile), daemonTimeout)}, nil
}

// daemonError is an error answer from the daemon.
type daemonError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *daemonError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("daemon answered HTTP %d", e.Status)
	}
	return fmt.Sprintf("daemon answered HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// do sends one request and returns the 2xx reply body, or a *daemonError,
// or an error saying the daemon is unreachable.
func (d *daemonClient) do(ctx context.Context, method, path, authz string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+d.addr+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cannot reach the cwcreds daemon at %s: %w (is it running? check `systemctl status cwcreds`; "+
			"pass --addr or set CWCREDS_LISTEN_ADDR if it listens elsewhere)", d.addr, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDaemonReply))
	if err != nil {
		return nil, fmt.Errorf("read the daemon's answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		de := &daemonError{Status: resp.StatusCode}
		_ = json.Unmarshal(data, de) // a non-JSON body still reports the status
		return nil, de
	}
	return data, nil
}
