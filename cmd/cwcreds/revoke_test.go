package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cwcreds/cwcreds/broker/cwapi/cwapitest"
)

// recordingProxy forwards connections to the daemon and keeps every byte
// clients sent: what a squatter on the daemon's port would have received.
type recordingProxy struct {
	addr string
	mu   sync.Mutex
	sent bytes.Buffer
}

func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &recordingProxy{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(c, up)
				io.Copy(io.MultiWriter(up, p), c)
			}()
		}
	}()
	return p
}

func (p *recordingProxy) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent.Write(b)
}

func (p *recordingProxy) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent.String()
}

// TestRevokeNeverSendsAPITokenToDaemon: `cwcreds revoke --token-file`
// revokes upstream itself and sends the daemon only the key id; the
// CoreWeave API token never crosses the daemon's socket (issue 11, finding
// 1: a squatter there got it), and the key is still revoked and replaced.
func TestRevokeNeverSendsAPITokenToDaemon(t *testing.T) {
	d := startDaemon(t)
	ids := d.warm(t)
	proxy := newRecordingProxy(t, d.addr)
	apiTokenFile := filepath.Join(d.dataDir, "credentials", "api-token")
	b, err := os.ReadFile(apiTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	apiToken := strings.TrimSpace(string(b))

	for _, args := range [][]string{
		{"revoke", "--addr", proxy.addr, "--profile", "wif", "--token-file", apiTokenFile},
		{"revoke", "--addr", proxy.addr, "--all-cached", "--token-file", apiTokenFile},
	} {
		stdout, stderr, err := runClient(t, args...)
		if err != nil {
			t.Fatalf("%q = %v\n%s%s", args, err, stdout, stderr)
		}
		if !strings.Contains(stdout, "revoked key") || !strings.Contains(stdout, "now serving new key") {
			t.Errorf("%q printed:\n%s", args, stdout)
		}
	}
	if k, _ := d.emu.Key(ids["wif"]); k.Status != cwapitest.StatusDeleted {
		t.Errorf("wif's key %s upstream is %s, want deleted", ids["wif"], k.Status)
	}
	if _, body := d.get(t, "wif", d.tokens["wif"]); body["AccessKeyId"] == ids["wif"] {
		t.Errorf("the daemon still serves the revoked key %s", ids["wif"])
	}
	sent := proxy.String()
	if !strings.Contains(sent, "revokedAccessKeyId") {
		t.Fatalf("the daemon was not asked to replace the key; it was sent:\n%s", sent)
	}
	if strings.Contains(sent, apiToken) || strings.Contains(sent, "apiToken") {
		t.Errorf("the API token crossed the daemon's socket:\n%s", sent)
	}
}
