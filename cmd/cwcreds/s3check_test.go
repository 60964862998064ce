package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cwcreds/cwcreds/broker"
	"github.com/cwcreds/cwcreds/config"
)

// TestDaemonServesKeysS3Accepts: with CWCREDS_S3_ENDPOINT the daemon serves
// a first key only once the S3 stand-in (which verifies SigV4 and learns a
// key 0.5 s after it was minted) accepts it, and /v1/profiles says so.
func TestDaemonServesKeysS3Accepts(t *testing.T) {
	d := startDaemon(t)
	d.stop()
	d.stop = nil
	const propagation = 500 * time.Millisecond
	s3 := newS3Verifier(func(id string) (string, bool) {
		k, ok := d.emu.Key(id)
		return k.SecretKey, ok
	})
	// S3 does not know a key before its propagation delay has passed.
	s3ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, cred, _ := strings.Cut(r.Header.Get("Authorization"), "Credential=")
		id, _, _ := strings.Cut(cred, "/")
		if k, ok := d.emu.Key(id); !ok || time.Since(k.Created) < propagation {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>`)
			return
		}
		s3.ServeHTTP(w, r)
	}))
	defer s3ts.Close()
	d.cfg.S3Endpoint, d.cfg.S3Region = s3ts.URL, "us-east-04a"
	t.Cleanup(func() { d.stop = nil }) // after the restarted daemon's own cleanup stopped it
	d.run(t, serveHooks{})

	start := time.Now()
	code, body := d.get(t, "train", d.tokens["train"])
	took := time.Since(start)
	id, _ := body["AccessKeyId"].(string)
	if code != 200 || id == "" {
		t.Fatalf("GET train = %d %v", code, body)
	}
	if s3.verifiedBy(id) == 0 {
		t.Errorf("served key %s before S3 accepted it (took %s; S3 refusals: %v)", id, took, s3.rejections())
	}
	if took > broker.VerifyColdWait+time.Second {
		t.Errorf("GET took %s, want within the %s hold plus the mint", took, broker.VerifyColdWait)
	}
	var st broker.Status
	for _, s := range statusOf(t, d) {
		if s.Profile == "train" {
			st = s
		}
	}
	if st.S3Check != "accepted" || st.AccessKeyID != id {
		t.Errorf("status of train = %+v, want key %s accepted by S3", st, id)
	}
	if !strings.Contains(d.logs.String(), `"event":"key_accepted"`) {
		t.Errorf("no key_accepted log line")
	}
}

func statusOf(t *testing.T, d *daemon) []broker.Status {
	t.Helper()
	var out bytes.Buffer
	if err := statusCmd(t.Context(), []string{"--json", "--addr", d.addr}, nil, &out, &out); err != nil && !strings.Contains(err.Error(), "unhealthy") {
		t.Fatalf("status: %v", err)
	}
	var body struct {
		Profiles []broker.Status `json:"profiles"`
	}
	if err := json.Unmarshal(out.Bytes(), &body); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	return body.Profiles
}

// TestStatusShowsRefusedKey: `cwcreds status` names S3's error for a key
// S3 refuses.
func TestStatusShowsRefusedKey(t *testing.T) {
	var out bytes.Buffer
	err := printStatus(&out, []broker.Status{
		{Profile: "train", Source: "access-key", Healthy: true, AccessKeyID: "CWABCDEFGHIJKLMN", S3Check: "refused", S3ErrorCode: "AccessDenied", S3HTTPStatus: 403},
		{Profile: "eval", Source: "access-key", Healthy: true, AccessKeyID: "CWOTHERKEY000000", S3Check: "accepted"},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, "train: S3 refuses key …KLMN: AccessDenied (HTTP 403)") || strings.Contains(got, "eval: S3") {
		t.Errorf("status output:\n%s\nwant one line for train naming AccessDenied", got)
	}
}

// TestNoVerifierWithoutEndpoint: without CWCREDS_S3_ENDPOINT there is no
// check, and the warm-up applies.
func TestNoVerifierWithoutEndpoint(t *testing.T) {
	v, err := newVerifier(&config.Config{}, zerolog.Nop(), nil)
	if v != nil || err != nil {
		t.Errorf("newVerifier without endpoint = %v, %v; want nil, nil", v, err)
	}
}
