package server

import (
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// nobody is the unprivileged user the attacks run as.
const nobody = 65534

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the attacker as uid 65534 and chowns files to it; CI runs as root")
	}
}

// sharedTempDir is a t.TempDir that other users may traverse, so a
// process running as nobody can reach entries inside it.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// asNobody runs sh -c script as uid/gid 65534, failing the test if it fails.
func asNobody(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid %d: %s: %v %s", nobody, script, err, out)
	}
}

// wantUnsafe checks err is an ErrUnsafePath naming every string in want.
func wantUnsafe(t *testing.T, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("err = %v, want ErrUnsafePath", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// TestLoadClientTokenRefusesUnsafeDir reproduces finding 2's first attack:
// with a runtime directory others can write, another user plants
// <profile>.token and the daemon adopted the attacker's token (and served
// the profile's keys to whoever knew it). The directory itself is refused
// now, whatever is in it, with the directory, owner, mode and fix named.
func TestLoadClientTokenRefusesUnsafeDir(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name  string
		mode  os.FileMode
		owner int
		want  string
	}{
		{"world-writable", 0o777, -1, "mode 0777"},
		{"group-writable", 0o770, -1, "mode 0770"},
		{"sticky world-writable", 0o777 | os.ModeSticky, -1, "mode 1777"},
		{"owned by another user", 0o755, nobody, "owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(sharedTempDir(t), "cwcreds")
			if err := os.Mkdir(dir, 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			// The directory's group is the attacker's, so group-write lets them in.
			owner := tc.owner
			if owner < 0 {
				owner = os.Geteuid()
			}
			if err := os.Chown(dir, owner, nobody); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "default.token")
			if tc.owner < 0 {
				// The attack: a real process as another user plants the token.
				asNobody(t, "printf attacker-chosen-token > "+path)
			}
			tok, _, err := LoadClientToken(path, rand.Reader, 0o640)
			if tok != "" {
				t.Errorf("LoadClientToken returned a token (%q) from an unsafe directory", tok)
			}
			wantUnsafe(t, err, dir, tc.want, "RuntimeDirectoryMode=0750", "chmod 0750")
			// A link to the unsafe directory is no way round.
			link := filepath.Join(t.TempDir(), "run")
			if err := os.Symlink(dir, link); err != nil {
				t.Fatal(err)
			}
			_, _, err = LoadClientToken(filepath.Join(link, "default.token"), rand.Reader, 0o640)
			wantUnsafe(t, err)
		})
	}
}

// TestLoadClientTokenRefusesPlantedFiles: files in a safe directory that
// the daemon cannot have created (left from when it was unsafe, or made by
// root by mistake) are refused, never adopted and never replaced. The
// symlink and hard link cases are finding 2's second attack: a link to the
// upstream token file made the CoreWeave API token every client's client
// token.
func TestLoadClientTokenRefusesPlantedFiles(t *testing.T) {
	needRoot(t)
	const apiToken = "CW-SECRET-api-token-0123456789"
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, path, upstream string)
		want  string
	}{
		{"symlink to the upstream token", func(t *testing.T, path, upstream string) {
			must(t, os.Symlink(upstream, path))
		}, "symbolic link"},
		{"hard link to the upstream token", func(t *testing.T, path, upstream string) {
			must(t, os.Link(upstream, path))
		}, "2 hard links"},
		{"owned by another user", func(t *testing.T, path, _ string) {
			must(t, os.WriteFile(path, []byte("attacker-chosen-token"), 0o644))
			must(t, os.Chown(path, nobody, nobody))
		}, "owned by uid 65534"},
		{"group-writable", func(t *testing.T, path, _ string) {
			must(t, os.WriteFile(path, []byte("some-token"), 0o600))
			must(t, os.Chmod(path, 0o660))
		}, "mode 0660"},
		{"a directory", func(t *testing.T, path, _ string) {
			must(t, os.Mkdir(path, 0o700))
		}, "not a regular file (a directory)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			upstream := filepath.Join(dir, "api-token")
			must(t, os.WriteFile(upstream, []byte(apiToken), 0o600))
			path := filepath.Join(dir, "default.token")
			tc.plant(t, path, upstream)
			tok, _, err := LoadClientToken(path, rand.Reader, 0o640)
			if tok != "" {
				t.Errorf("LoadClientToken returned %q", tok)
			}
			wantUnsafe(t, err, path, tc.want, "rm "+path)
			if strings.Contains(err.Error(), apiToken) {
				t.Error("the error quotes the upstream token")
			}
			if b, _ := os.ReadFile(upstream); string(b) != apiToken {
				t.Errorf("the upstream token file was changed to %q", b)
			}
		})
	}
}

// TestLoadClientTokenFIFODoesNotHang: a FIFO at a client token path made
// start-up (and every reload) wait forever for a writer. It is refused at
// once now.
func TestLoadClientTokenFIFODoesNotHang(t *testing.T) {
	path := filepath.Join(t.TempDir(), "default.token")
	must(t, syscall.Mkfifo(path, 0o600))
	done := make(chan error, 1)
	go func() { _, _, err := LoadClientToken(path, rand.Reader, 0o640); done <- err }()
	select {
	case err := <-done:
		wantUnsafe(t, err, "not a regular file (a FIFO)")
	case <-time.After(5 * time.Second):
		// Unblock the reader so the goroutine ends.
		if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		t.Fatal("LoadClientToken blocked on a FIFO")
	}
}

// TestReplaceTokenOverPlant is the admin token's re-creation: it used to
// remove the file and create it again by name, a window in which another
// user (with a writable directory) could put a file or symlink of their
// own there. ReplaceToken renames a new file over the name in one step,
// replacing a symlink rather than writing through it.
func TestReplaceTokenOverPlant(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	must(t, os.WriteFile(victim, []byte("unchanged"), 0o644))
	must(t, os.Symlink(victim, filepath.Join(dir, "admin-token")))
	d, err := OpenTokenDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tok, err := d.ReplaceToken("admin-token", rand.Reader, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "unchanged" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	fi, err := os.Lstat(filepath.Join(dir, "admin-token"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin-token = %v, %v; want a regular 0600 file", fi, err)
	}
	if got, _, err := d.LoadToken("admin-token", rand.Reader, 0o600); err != nil || got != tok {
		t.Errorf("LoadToken after ReplaceToken = %q, %v; want %q", got, err, tok)
	}
	again, err := d.ReplaceToken("admin-token", rand.Reader, 0o600)
	if err != nil || again == tok {
		t.Errorf("second ReplaceToken = %q, %v; want a new token", again, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("directory holds %d entries, want 2 (no temp file left)", len(entries))
	}
}

// Daemons starting together agree on one token: exactly one creates it.
func TestLoadTokenConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	toks := make([]string, 8)
	created := make([]bool, 8)
	for i := range toks {
		wg.Go(func() {
			var err error
			toks[i], created[i], err = LoadClientToken(filepath.Join(dir, "p.token"), rand.Reader, 0o640)
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	n := 0
	for i := range toks {
		if toks[i] != toks[0] {
			t.Errorf("tokens differ: %q vs %q", toks[i], toks[0])
		}
		if created[i] {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d calls created the file, want 1", n)
	}
}

func TestOpenTokenDirRelative(t *testing.T) {
	if _, err := OpenTokenDir("run/cwcreds", true); err == nil {
		t.Error("OpenTokenDir accepted a relative path")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
