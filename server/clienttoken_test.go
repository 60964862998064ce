package server

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func TestLoadClientTokenCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "cwcreds")
	path := filepath.Join(dir, "default.token")

	tok, created, err := LoadClientToken(path, rand.Reader, 0o640)
	if err != nil || !created {
		t.Fatalf("LoadClientToken = %v, %v; want created", created, err)
	}
	if _, err := hex.DecodeString(tok); err != nil || len(tok) != 64 {
		t.Errorf("token %q is not 64 hex characters", tok)
	}
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(content) != tok {
		t.Errorf("file holds %q, want exactly the token %q (no newline)", content, tok)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode(); got != 0o640 {
		t.Errorf("file mode = %v, want -rw-r----- (the mode asked for)", got)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := di.Mode().Perm() &^ 0o750; got != 0 {
		t.Errorf("directory mode = %v, want at most rwxr-x---", di.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the token file (no temp file left)", len(entries))
	}

	again, created, err := LoadClientToken(path, rand.Reader, 0o600)
	if err != nil || created || again != tok {
		t.Errorf("second LoadClientToken = %q, %v, %v; want %q, false, nil", again, created, err, tok)
	}
}

func TestLoadClientTokenUsesRandom(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t")
	tok, _, err := LoadClientToken(path, bytes.NewReader(bytes.Repeat([]byte{0xab}, 32)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat("ab", 32); tok != want {
		t.Errorf("token = %q, want %q", tok, want)
	}
}

func TestLoadClientTokenRandomFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t")
	for _, r := range []io.Reader{iotest.ErrReader(errors.New("no entropy")), bytes.NewReader(make([]byte, 31))} {
		if _, _, err := LoadClientToken(path, r, 0o600); err == nil {
			t.Errorf("LoadClientToken with a failing random source succeeded")
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("file created despite the error: %v", err)
		}
	}
}

func TestLoadClientTokenExisting(t *testing.T) {
	const secret = "s3cr3t"
	tests := []struct {
		name    string
		content string
		wantErr string // substring; "" means accepted
	}{
		{"hex", strings.Repeat("a1", 32), ""},
		{"operator chosen", "My-Token_" + secret + "+/=", ""},
		{"inner space", "a " + secret, ""},
		{"trailing newline", secret + "\n", "CR or LF"},
		{"crlf", secret + "\r\n", "CR or LF"},
		{"inner newline", secret + "\n" + secret, "CR or LF"},
		{"empty", "", "empty"},
		{"leading blank", " " + secret, "blanks"},
		{"trailing tab", secret + "\t", "blanks"},
		{"control byte", secret + "\x00", "control"},
		{"non-ascii", secret + "é", "non-ASCII"},
		{"too large", strings.Repeat("a", 4097), "larger"},
		{"at limit", strings.Repeat("a", 4096), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "client.token")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			tok, created, err := LoadClientToken(path, iotest.ErrReader(errors.New("must not be read")), 0o600)
			if tt.wantErr == "" {
				if err != nil || created || tok != tt.content {
					t.Errorf("LoadClientToken = %q, %v, %v; want the file's content, false, nil", tok, created, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadClientToken accepted %q, want an error mentioning %q", tt.content, tt.wantErr)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.wantErr) || !strings.Contains(msg, path) || strings.Contains(msg, secret) {
				t.Errorf("error = %q, want it to mention %q and the path, and not the content", msg, tt.wantErr)
			}
			if got, _ := os.ReadFile(path); string(got) != tt.content {
				t.Errorf("file was modified")
			}
		})
	}
}

func TestLoadClientTokenUnreadable(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadClientToken(dir, rand.Reader, 0o600); err == nil {
		t.Errorf("LoadClientToken(a directory) succeeded, want an error")
	}
}

func TestTokenMatches(t *testing.T) {
	tests := []struct {
		presented, want string
		ok              bool
	}{
		{"abc", "abc", true},
		{"abd", "abc", false},
		{"ab", "abc", false},
		{"abcd", "abc", false},
		{"", "abc", false},
		{"", "", false}, // an empty configured token matches nothing
		{"x", "", false},
	}
	for _, tt := range tests {
		if got := tokenMatches(tt.presented, tt.want); got != tt.ok {
			t.Errorf("tokenMatches(%q, %q) = %v, want %v", tt.presented, tt.want, got, tt.ok)
		}
	}
}

// A file that appears between the read and the link (another process
// starting at the same time) wins over ours.
func TestCreateClientTokenLosesRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t")
	if err := os.WriteFile(path, []byte("theirs"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := OpenTokenDir(filepath.Dir(path), false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tok, created, err := d.createToken(filepath.Base(path), rand.Reader, 0o600)
	if err != nil || created || tok != "theirs" {
		t.Errorf("createClientToken over an existing file = %q, %v, %v; want %q, false, nil", tok, created, err, "theirs")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1 (temp file removed)", len(entries))
	}
}

func TestLoadClientTokenEmptyPath(t *testing.T) {
	if _, _, err := LoadClientToken("", rand.Reader, 0o600); err == nil {
		t.Errorf("LoadClientToken(\"\") succeeded, want an error")
	}
}
