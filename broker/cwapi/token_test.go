package cwapi_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cwcreds/cwcreds/broker/cwapi"
)

// allowInsecure is CWCREDS_ALLOW_INSECURE_FILE_MODES=true.
var allowInsecure = cwapi.TokenFileRules{AllowInsecureMode: true}

// writeMode writes content to path and then sets mode exactly (WriteFile
// alone is subject to the umask).
func writeMode(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// checkInsecureModeErr asserts err is the file mode refusal for path and
// mode: both sentinels match, the path, the mode and both fixes are named,
// and the content is not.
func checkInsecureModeErr(t *testing.T, err error, path string, mode fs.FileMode, content string) {
	t.Helper()
	if !errors.Is(err, cwapi.ErrInsecureFileMode) || !errors.Is(err, cwapi.ErrBadToken) {
		t.Fatalf("err = %v, want ErrInsecureFileMode (and ErrBadToken)", err)
	}
	msg := err.Error()
	for _, want := range []string{
		path + " has mode " + fmt.Sprintf("%04o", uint32(mode)),
		"chmod 600 " + path,
		"CWCREDS_ALLOW_INSECURE_FILE_MODES=true",
		"LoadCredential=",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, content) {
		t.Errorf("error leaks the token: %q", msg)
	}
}

func TestReadTokenFileModes(t *testing.T) {
	const tok = "CW-SECRET-mode-check"
	tests := []struct {
		mode fs.FileMode
		ok   bool
		can  string // what the message says others can do
	}{
		{0o600, true, ""},
		{0o400, true, ""},
		{0o700, true, ""}, // the execute bit gives nobody else anything
		{0o640, false, "can read it"},
		{0o644, false, "can read it"},
		{0o604, false, "can read it"},
		{0o440, false, "can read it"},
		{0o620, false, "can write it"}, // group may substitute its own identity
		{0o602, false, "can write it"},
		{0o666, false, "can read and write it"},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%04o", uint32(tc.mode)), func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("token-%04o", uint32(tc.mode)))
			writeMode(t, path, tok+"\n", tc.mode)
			got, err := cwapi.ReadTokenFile(path)
			if tc.ok {
				if err != nil || got != tok {
					t.Fatalf("ReadTokenFile = %q, %v; want the token", got, err)
				}
				return
			}
			checkInsecureModeErr(t, err, path, tc.mode, tok)
			if !strings.Contains(err.Error(), tc.can) {
				t.Errorf("error %q does not say others %s", err, tc.can)
			}
			if _, err := cwapi.ReadTokenFileWith(path, cwapi.TokenFileRules{}); !errors.Is(err, cwapi.ErrInsecureFileMode) {
				t.Errorf("ReadTokenFileWith(path, zero rules) = %v, want ErrInsecureFileMode", err)
			}
			if got, err := cwapi.ReadTokenFileWith(path, allowInsecure); err != nil || got != tok {
				t.Errorf("allowed: ReadTokenFileWith = %q, %v; want the token", got, err)
			}
		})
	}
}

// TestReadTokenFileRefusesNonRegular: a directory and a FIFO are refused at
// once; opening the FIFO must not wait for a writer.
func TestReadTokenFileRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{dir, fifo} {
		done := make(chan error, 1)
		go func() {
			_, err := cwapi.ReadTokenFile(path)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, cwapi.ErrBadToken) || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("%s: err = %v, want ErrBadToken, not a regular file", path, err)
			}
		case <-time.After(10 * time.Second): // a bound, not synchronisation: a blocked open never returns
			t.Fatalf("ReadTokenFile(%s) blocked", path)
		}
	}
}

// TestReadTokenFileKubernetesSymlinkSwap replays how the kubelet updates a
// Secret or projected volume: token -> ..data/token, ..data -> a timestamped
// directory, and an update renames a new ..data symlink over the old one.
// The next read sees the new token, and the mode checked is the target
// file's, not the symlink's (always 0777).
func TestReadTokenFileKubernetesSymlinkSwap(t *testing.T) {
	vol := t.TempDir()
	token := filepath.Join(vol, "token")
	if err := os.Symlink(filepath.Join("..data", "token"), token); err != nil {
		t.Fatal(err)
	}
	publish := func(ts, content string, mode fs.FileMode) {
		t.Helper()
		dir := filepath.Join(vol, ts)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeMode(t, filepath.Join(dir, "token"), content, mode)
		tmp := filepath.Join(vol, "..data_tmp")
		if err := os.Symlink(ts, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(vol, "..data")); err != nil { // atomic swap
			t.Fatal(err)
		}
	}

	publish("..2026_01_01_00_00_00.000000001", "CW-SECRET-first", 0o600)
	if got, err := cwapi.ReadTokenFile(token); err != nil || got != "CW-SECRET-first" {
		t.Fatalf("first: %q, %v", got, err)
	}
	publish("..2026_01_01_01_00_00.000000002", "CW-SECRET-second", 0o400)
	if got, err := cwapi.ReadTokenFile(token); err != nil || got != "CW-SECRET-second" {
		t.Fatalf("after the swap: %q, %v; want the new token", got, err)
	}
	publish("..2026_01_01_02_00_00.000000003", "CW-SECRET-third", 0o440) // defaultMode 0440 with fsGroup
	_, err := cwapi.ReadTokenFile(token)
	checkInsecureModeErr(t, err, token, 0o440, "CW-SECRET-third")
	if got, err := cwapi.ReadTokenFileWith(token, allowInsecure); err != nil || got != "CW-SECRET-third" {
		t.Fatalf("allowed: %q, %v", got, err)
	}
}

// TestReadTokenFileRenameOver: a file renamed over the token file is read
// next time, with its own mode.
func TestReadTokenFileRenameOver(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	replace := func(content string, mode fs.FileMode) {
		t.Helper()
		tmp := filepath.Join(dir, ".token.new")
		writeMode(t, tmp, content, mode)
		if err := os.Rename(tmp, token); err != nil {
			t.Fatal(err)
		}
	}
	replace("CW-SECRET-one", 0o600)
	if got, err := cwapi.ReadTokenFile(token); err != nil || got != "CW-SECRET-one" {
		t.Fatalf("%q, %v", got, err)
	}
	replace("CW-SECRET-two", 0o644) // e.g. written by a tool with umask 022
	_, err := cwapi.ReadTokenFile(token)
	checkInsecureModeErr(t, err, token, 0o644, "CW-SECRET-two")
	replace("CW-SECRET-three", 0o600)
	if got, err := cwapi.ReadTokenFile(token); err != nil || got != "CW-SECRET-three" {
		t.Fatalf("%q, %v", got, err)
	}
}

// TestMinterAndRevokerRefuseInsecureTokenFile: through the real client and
// the emulator, a group-readable token file fails the mint (and a revoke
// with the profile's own token) before any upstream call; allowed, or once
// fixed with chmod, the same file mints.
func TestMinterAndRevokerRefuseInsecureTokenFile(t *testing.T) {
	c, emu := newEmulated(t)
	path := filepath.Join(t.TempDir(), "api-token")
	writeMode(t, path, apiToken+"\n", 0o640)
	p := cwapi.MintSpec{Name: "p", Source: cwapi.SourceAccessKey, TokenFile: path, Duration: time.Hour}
	m, err := c.Minter(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Mint(t.Context())
	checkInsecureModeErr(t, err, path, 0o640, apiToken)
	err = c.Revoker(p).Revoke(t.Context(), "", "CWAAAAAAAAAAAAAA")
	checkInsecureModeErr(t, err, path, 0o640, apiToken)
	if st := emu.Stats(); len(st.Requests) != 0 {
		t.Fatalf("upstream saw %v; a refused token file must not be sent", st.Requests)
	}

	allowed := p
	allowed.TokenFileRules = allowInsecure
	am, err := c.Minter(allowed)
	if err != nil {
		t.Fatal(err)
	}
	k, err := am.Mint(t.Context())
	if err != nil {
		t.Fatalf("allowed profile: %v", err)
	}
	if err := c.Revoker(allowed).Revoke(t.Context(), "", k.AccessKeyID); err != nil {
		t.Fatalf("allowed revoke: %v", err)
	}

	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Mint(t.Context()); err != nil {
		t.Fatalf("after chmod 600 the same minter must work: %v", err)
	}
}

// TestReadTokenFileCredentialsDirectory: a file that really lies in the
// systemd credentials directory is accepted whatever its mode (systemd ≥
// 254 makes LoadCredential= files root-owned 0440 with an ACL); the same
// mode anywhere else is refused, including through a symlink out of the
// directory and in a sibling whose name shares the directory's as a prefix.
func TestReadTokenFileCredentialsDirectory(t *testing.T) {
	const tok = "CW-SECRET-credentials-dir"
	base := t.TempDir()
	creds := filepath.Join(base, "creds")
	sibling := filepath.Join(base, "creds2") // shares "creds" as a string prefix
	other := filepath.Join(base, "other")
	for _, d := range []string{creds, sibling, other} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inCreds := filepath.Join(creds, "api-token")
	writeMode(t, inCreds, tok+"\n", 0o440)
	loose := filepath.Join(creds, "loose")
	writeMode(t, loose, tok+"\n", 0o644)
	outside := filepath.Join(other, "api-token")
	writeMode(t, outside, tok+"\n", 0o440)
	inSibling := filepath.Join(sibling, "api-token")
	writeMode(t, inSibling, tok+"\n", 0o440)
	intoCreds := filepath.Join(other, "link-into-creds") // outside, pointing in
	if err := os.Symlink(inCreds, intoCreds); err != nil {
		t.Fatal(err)
	}
	outOfCreds := filepath.Join(creds, "link-out") // inside, pointing out
	if err := os.Symlink(outside, outOfCreds); err != nil {
		t.Fatal(err)
	}
	credsLink := filepath.Join(base, "creds-link") // the directory named through a symlink
	if err := os.Symlink(creds, credsLink); err != nil {
		t.Fatal(err)
	}

	rules := cwapi.TokenFileRules{CredentialsDir: creds}
	tests := []struct {
		name  string
		path  string
		rules cwapi.TokenFileRules
		ok    bool
	}{
		{"0440 in the directory", inCreds, rules, true},
		{"0644 in the directory", loose, rules, true},
		{"symlink outside pointing in", intoCreds, rules, true},
		{"directory named through a symlink", inCreds, cwapi.TokenFileRules{CredentialsDir: credsLink}, true},
		{"file named through the directory's symlink", filepath.Join(credsLink, "api-token"), rules, true},
		{"0440 outside", outside, rules, false},
		{"symlink in the directory pointing out", outOfCreds, rules, false},
		{"dot-dot out of the directory", filepath.Join(creds, "..", "other", "api-token"), rules, false},
		{"sibling sharing the prefix", inSibling, rules, false},
		{"no credentials directory", inCreds, cwapi.TokenFileRules{}, false},
		{"relative credentials directory", inCreds, cwapi.TokenFileRules{CredentialsDir: "creds"}, false},
		{"missing credentials directory", inCreds, cwapi.TokenFileRules{CredentialsDir: filepath.Join(base, "gone")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cwapi.ReadTokenFileWith(tc.path, tc.rules)
			if tc.ok {
				if err != nil || got != tok {
					t.Fatalf("ReadTokenFileWith(%s) = %q, %v; want the token", tc.path, got, err)
				}
				return
			}
			fi, serr := os.Stat(tc.path)
			if serr != nil {
				t.Fatal(serr)
			}
			checkInsecureModeErr(t, err, tc.path, fi.Mode().Perm(), tok)
		})
	}

	// Refused inside the directory's name, the error says why the
	// directory's trust does not apply.
	_, err := cwapi.ReadTokenFileWith(outOfCreds, rules)
	if want := "resolves outside $CREDENTIALS_DIRECTORY"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it to say the file %s", err, want)
	}
}

// TestMinterTrustsCredentialsDirectory: a profile whose token file is a
// LoadCredential= file (0440 in $CREDENTIALS_DIRECTORY) mints through the
// real client; the same profile without the directory in its rules is
// refused before any upstream call.
func TestMinterTrustsCredentialsDirectory(t *testing.T) {
	c, emu := newEmulated(t)
	creds := t.TempDir()
	path := filepath.Join(creds, "api-token")
	writeMode(t, path, apiToken+"\n", 0o440)
	p := cwapi.MintSpec{Name: "p", Source: cwapi.SourceAccessKey, TokenFile: path, Duration: time.Hour}

	m, err := c.Minter(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Mint(t.Context())
	checkInsecureModeErr(t, err, path, 0o440, apiToken)
	if st := emu.Stats(); len(st.Requests) != 0 {
		t.Fatalf("upstream saw %v; a refused token file must not be sent", st.Requests)
	}

	p.TokenFileRules = cwapi.TokenFileRules{CredentialsDir: creds}
	if m, err = c.Minter(p); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Mint(t.Context()); err != nil {
		t.Fatalf("a 0440 file in the credentials directory: %v", err)
	}
}

// TestReadTokenFileRefusesOtherOwners reproduces finding 2's owner attack:
// a token file owned by another unprivileged user passed the mode check
// (0600 is "owner only", and the owner is the attacker), so that user,
// rewriting it at will, chose the identity whose keys every client got. A
// real process as uid 65534 rewrites its file between reads; every read
// is refused now, even with CWCREDS_ALLOW_INSECURE_FILE_MODES, and through
// a symlink (the target's owner counts). In $CREDENTIALS_DIRECTORY the
// owner is systemd's business, as the mode is.
func TestReadTokenFileRefusesOtherOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns files to uid 65534 and runs the attacker as it; CI runs as root")
	}
	const nobody = 65534
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(base, "api-token")
	writeMode(t, path, "CW-SECRET-legit\n", 0o600)
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	attacker := exec.Command("/bin/sh", "-c", "printf CW-SECRET-attacker > "+path)
	attacker.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := attacker.CombinedOutput(); err != nil {
		t.Fatalf("rewrite as uid %d: %v %s", nobody, err, out)
	}
	link := filepath.Join(t.TempDir(), "link") // owned by root, pointing at the attacker's file
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		path  string
		rules cwapi.TokenFileRules
	}{
		{"0600 owned by another user", path, cwapi.TokenFileRules{}},
		{"insecure modes allowed", path, allowInsecure},
		{"through a root-owned symlink", link, allowInsecure},
		{"credentials directory elsewhere", path, cwapi.TokenFileRules{CredentialsDir: t.TempDir()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cwapi.ReadTokenFileWith(tc.path, tc.rules)
			if !errors.Is(err, cwapi.ErrUntrustedOwner) || !errors.Is(err, cwapi.ErrBadToken) {
				t.Fatalf("ReadTokenFileWith = %q, %v; want ErrUntrustedOwner", got, err)
			}
			for _, want := range []string{tc.path, "uid 65534", "chown", "LoadCredential="} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "CW-SECRET") {
				t.Error("the error quotes the token")
			}
		})
	}
	// Root-owned (a Kubernetes Secret volume: root:fsGroup 0440) is fine
	// with insecure modes allowed; so is any owner in the credentials
	// directory.
	if err := os.Chown(path, 0, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o440); err != nil {
		t.Fatal(err)
	}
	if got, err := cwapi.ReadTokenFileWith(path, allowInsecure); err != nil || got != "CW-SECRET-attacker" {
		t.Errorf("root-owned 0440 with insecure modes allowed = %q, %v", got, err)
	}
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if got, err := cwapi.ReadTokenFileWith(path, cwapi.TokenFileRules{CredentialsDir: base}); err != nil || got != "CW-SECRET-attacker" {
		t.Errorf("in the credentials directory = %q, %v; want accepted", got, err)
	}
}
