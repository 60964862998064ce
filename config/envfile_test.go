package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeEnvFile writes content to a new file with exactly mode (not
// subject to the umask) and returns its path.
func writeEnvFile(t *testing.T, content string, mode fs.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cwcreds.env")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadEnvFileSyntax(t *testing.T) {
	content := strings.Join([]string{
		"# a comment",
		"   ; another, indented",
		"",
		"   ",
		"CWCREDS_PROFILES=train,eval",
		"  CWCREDS_LOG_LEVEL =  debug  ", // blanks around name and value dropped
		"CWCREDS_NODE_NAME=",             // empty: the default
		`CWCREDS_PROFILE_TRAIN_TOKEN_FILE='/etc/cw creds/$HOME\n'`,
		`CWCREDS_PROFILE_EVAL_TOKEN_FILE="/etc/a \"b\" \\ \$x \` + "`" + `"`,
		"CWCREDS_PROFILE_TRAIN_SOURCE=access-key\r", // CRLF line ending
		"CWCREDS_API_URL=https://api.coreweave.com/#not-a-comment",
		"CWCREDS_PROFILES=train", // set again: the last value wins, at the first place
		"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS=alice, bob",
		"CWCREDS_PROFILE_EVAL_SOURCE=$SOURCE", // no expansion
		"CWCREDS_PROFILE_EVAL_ORG_ID=''",
		"cwcreds_log_format=json", // mis-cased: Load's to report
	}, "\n") + "\n"
	got, err := ReadEnvFile(writeEnvFile(t, content, 0o640), false)
	if err != nil {
		t.Fatalf("ReadEnvFile: %v", err)
	}
	want := []EnvVar{
		{"CWCREDS_PROFILES", "train"},
		{"CWCREDS_LOG_LEVEL", "debug"},
		{"CWCREDS_NODE_NAME", ""},
		{"CWCREDS_PROFILE_TRAIN_TOKEN_FILE", `/etc/cw creds/$HOME\n`},
		{"CWCREDS_PROFILE_EVAL_TOKEN_FILE", `/etc/a "b" \ $x ` + "`"},
		{"CWCREDS_PROFILE_TRAIN_SOURCE", "access-key"},
		{"CWCREDS_API_URL", "https://api.coreweave.com/#not-a-comment"},
		{"CWCREDS_PROFILE_TRAIN_ALLOWED_UIDS", "alice, bob"},
		{"CWCREDS_PROFILE_EVAL_SOURCE", "$SOURCE"},
		{"CWCREDS_PROFILE_EVAL_ORG_ID", ""},
		{"cwcreds_log_format", "json"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadEnvFile =\n%q\nwant\n%q", got, want)
	}
}

func TestReadEnvFileEdges(t *testing.T) {
	tests := []struct {
		content string
		want    []EnvVar
	}{
		{"", nil},
		{"\n\n", nil},
		{"# only comments\n; here\n", nil},
		{"CWCREDS_LOG_LEVEL=info", []EnvVar{{"CWCREDS_LOG_LEVEL", "info"}}}, // no final newline
		{"CWCREDS_LOG_LEVEL=info\r\n", []EnvVar{{"CWCREDS_LOG_LEVEL", "info"}}},
		{"CWCREDS_LOG_LEVEL = \"\"\n", []EnvVar{{"CWCREDS_LOG_LEVEL", ""}}},
	}
	for _, tc := range tests {
		got, err := ReadEnvFile(writeEnvFile(t, tc.content, 0o600), false)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: ReadEnvFile = %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
}

// TestReadEnvFileMalformed: every malformed line is reported, as
// path:line: reason, and no value appears in the error.
func TestReadEnvFileMalformed(t *testing.T) {
	const secret = "CW-SECRET-0123456789"
	tests := []struct {
		line, want string
	}{
		{secret, "is not NAME=value; comment lines start with # or ;"},
		{"export CWCREDS_LOG_LEVEL=debug", `starts with "export", which systemd's EnvironmentFile= does not accept; remove it`},
		{"=" + secret, "has no variable name before '='"},
		{secret + "=x", "the text before '=' is not a variable name"},
		{"1CWCREDS=x", "not a variable name"},
		{"CWCREDS LOG_LEVEL=x", "not a variable name"},
		{"CWCREDS_ENV_FILE=/etc/other.env", "CWCREDS_ENV_FILE cannot be set in the file it names"},
		{"HTTPS_PROXY=http://proxy:3128", `"HTTPS_PROXY" is not a CWCREDS_ variable; the daemon reads this file after it started`},
		{"CWCREDS_PROFILES=a # the profiles", "CWCREDS_PROFILES: systemd takes everything after '=' as the value, including ' #...'"},
		{"CWCREDS_PROFILES=a\t# the profiles", "including ' #...'"},
		{"CWCREDS_PROFILE_A_TOKEN_FILE='" + secret, "CWCREDS_PROFILE_A_TOKEN_FILE: the single quote is not closed on this line"},
		{`CWCREDS_PROFILE_A_TOKEN_FILE="` + secret, "the double quote is not closed on this line"},
		{`CWCREDS_PROFILE_A_TOKEN_FILE="` + secret + `\"`, "the double quote is not closed"},
		{`CWCREDS_PROFILE_A_TOKEN_FILE="` + secret + `" # c`, "text follows the closing quote"},
		{`CWCREDS_PROFILE_A_TOKEN_FILE='` + secret + `'x`, "text follows the closing quote"},
		{`CWCREDS_PROFILE_A_TOKEN_FILE='a' 'b'`, "text follows the closing quote"},
		{`CWCREDS_PROFILE_A_TOKEN_FILE="` + secret + `\n"`, `inside double quotes a backslash must be followed by ", \, $ or `},
		{`CWCREDS_PROFILE_A_TOKEN_FILE=` + secret + `\`, "an unquoted value contains a backslash, which systemd would drop"},
		{`CWCREDS_PROFILE_A_TOKEN_FILE=` + secret + `\x`, "contains a backslash"},
		{`CWCREDS_PROFILE_A_TOKEN_FILE=it's-` + secret, "an unquoted value contains a quote; wrap the whole value in quotes"},
		{`CWCREDS_PROFILE_A_TOKEN_FILE=a"` + secret + `"`, "contains a quote"},
		{"CWCREDS_PROFILE_A_TOKEN_FILE=" + secret + "\x00", "contains a NUL byte"},
		{"CWCREDS_PROFILE_A_TOKEN_FILE=" + secret + "\rX=1", "contains a carriage return inside the line"},
		{"CWCREDS_PROFILE_A_TOKEN_FILE=" + secret + "\xff", "is not valid UTF-8"},
	}
	var b strings.Builder
	b.WriteString("# header\nCWCREDS_PROFILES=a\n") // lines 1 and 2 are fine
	for _, tc := range tests {
		b.WriteString(tc.line + "\n")
	}
	path := writeEnvFile(t, b.String(), 0o600)
	got, err := ReadEnvFile(path, false)
	if err == nil {
		t.Fatalf("ReadEnvFile = %q, want errors", got)
	}
	if got != nil {
		t.Errorf("ReadEnvFile returned variables along with errors: %q", got)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(tests) {
		t.Errorf("got %d error lines, want %d:\n%v", len(lines), len(tests), err)
	}
	for i, tc := range tests {
		if i >= len(lines) {
			break
		}
		prefix := fmt.Sprintf("%s:%d: ", path, i+3)
		if !strings.HasPrefix(lines[i], prefix) || !strings.Contains(lines[i], tc.want) {
			t.Errorf("line %d (%q): error %q\nwant prefix %q and %q", i+3, tc.line, lines[i], prefix, tc.want)
		}
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("an error quotes a value:\n%v", err)
	}
}

func TestReadEnvFileModes(t *testing.T) {
	const content = "CWCREDS_PROFILES=a\n"
	for _, mode := range []fs.FileMode{0o600, 0o400, 0o640, 0o644, 0o440} {
		if _, err := ReadEnvFile(writeEnvFile(t, content, mode), false); err != nil {
			t.Errorf("mode %04o: %v; a file only its owner can write is fine", uint32(mode), err)
		}
	}
	for _, mode := range []fs.FileMode{0o660, 0o620, 0o602, 0o666} {
		path := writeEnvFile(t, content, mode)
		_, err := ReadEnvFile(path, false)
		if err == nil {
			t.Errorf("mode %04o accepted; group or others could choose the daemon's credentials", uint32(mode))
			continue
		}
		for _, want := range []string{fmt.Sprintf("%s has mode %04o", path, uint32(mode)),
			"chmod go-w " + path, "CWCREDS_ALLOW_INSECURE_FILE_MODES=true"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("mode %04o: error %q lacks %q", uint32(mode), err, want)
			}
		}
		if got, err := ReadEnvFile(path, true); err != nil || len(got) != 1 {
			t.Errorf("mode %04o with allowInsecure: %q, %v", uint32(mode), got, err)
		}
	}
}

// TestReadEnvFileFollowsSymlink: a symlinked file is read, and its target's
// mode is the one checked.
func TestReadEnvFileFollowsSymlink(t *testing.T) {
	target := writeEnvFile(t, "CWCREDS_LOG_LEVEL=warn\n", 0o640)
	link := filepath.Join(t.TempDir(), "cwcreds.env")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadEnvFile(link, false); err != nil || len(got) != 1 || got[0].Value != "warn" {
		t.Fatalf("ReadEnvFile(symlink) = %q, %v", got, err)
	}
	if err := os.Chmod(target, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadEnvFile(link, false); err == nil || !strings.Contains(err.Error(), "has mode 0666") {
		t.Errorf("world-writable target behind a symlink: err = %v", err)
	}
}

func TestReadEnvFileRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{dir, fifo} {
		done := make(chan error, 1)
		go func() {
			_, err := ReadEnvFile(path, false)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "is not a regular file") {
				t.Errorf("%s: err = %v, want not a regular file", path, err)
			}
		case <-time.After(10 * time.Second): // a bound, not synchronisation: a blocked open never returns
			t.Fatalf("ReadEnvFile(%s) blocked", path)
		}
	}

	_, err := ReadEnvFile(filepath.Join(dir, "missing"), false)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v, want fs.ErrNotExist", err)
	}

	big := writeEnvFile(t, "# "+strings.Repeat("x", maxEnvFileBytes)+"\n", 0o600)
	if _, err := ReadEnvFile(big, false); err == nil || !strings.Contains(err.Error(), "larger than 1 MiB") {
		t.Errorf("oversized file: err = %v", err)
	}
	atLimit := writeEnvFile(t, "#"+strings.Repeat("x", maxEnvFileBytes-2)+"\n", 0o600)
	if _, err := ReadEnvFile(atLimit, false); err != nil {
		t.Errorf("a file of exactly 1 MiB: %v", err)
	}
}

// TestReadEnvFileThenLoad: the file's variables, set in the environment,
// make a configuration Load accepts; CWCREDS_ENV_FILE itself comes from the
// process environment and is known to the typo guard.
func TestReadEnvFileThenLoad(t *testing.T) {
	path := writeEnvFile(t, "CWCREDS_PROFILES=train\n"+
		"CWCREDS_PROFILE_TRAIN_SOURCE=access-key\n"+
		"CWCREDS_PROFILE_TRAIN_TOKEN_FILE=\"/etc/cwcreds/train\"\n"+
		"CWCREDS_KEY_WARMUP=2s\n", 0o640)
	vars, err := ReadEnvFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	cleanEnv(t)
	t.Setenv("CWCREDS_ENV_FILE", path)
	for _, v := range vars {
		t.Setenv(v.Name, v.Value)
	}
	cfg, err := Load(os.Environ())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.EnvFile != path || cfg.KeyWarmup != 2*time.Second || len(cfg.Profiles) != 1 ||
		cfg.Profiles[0].TokenFile != "/etc/cwcreds/train" {
		t.Errorf("Load = %+v", cfg)
	}
}

// TestEnvExampleReads: systemd/cwcreds.env.example, which scripts/install.sh
// installs as the daemon's first cwcreds.env, is a file ReadEnvFile accepts
// and sets only what it means to.
func TestEnvExampleReads(t *testing.T) {
	got, err := ReadEnvFile(filepath.Join("..", "systemd", "cwcreds.env.example"), false)
	if err != nil {
		t.Fatalf("the example is not a valid environment file: %v", err)
	}
	want := []EnvVar{
		{"CWCREDS_PROFILES", "training"},
		{"CWCREDS_PROFILE_TRAINING_SOURCE", "access-key"},
		{"CWCREDS_PROFILE_TRAINING_TOKEN_FILE", "api-token"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the example sets %q, want %q", got, want)
	}
}

// TestReadEnvFileRefusesOtherOwners: an env file owned by another
// unprivileged user passed the mode check (0600, 0640 are fine modes),
// so that user, rewriting it (here a real process as uid 65534), chose the
// daemon's token files, API URL and profiles. It is refused now, with
// insecure modes allowed too, and behind a root-owned symlink; root-owned
// (root:cwcreds 0640, as scripts/install.sh makes it) is fine.
func TestReadEnvFileRefusesOtherOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns the file to uid 65534 and runs the attacker as it; CI runs as root")
	}
	const nobody = 65534
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "cwcreds.env")
	if err := os.WriteFile(path, []byte("CWCREDS_LOG_LEVEL=info\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", "printf 'CWCREDS_API_URL=https://attacker.example\\n' > "+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rewrite as uid %d: %v %s", nobody, err, out)
	}
	link := filepath.Join(t.TempDir(), "cwcreds.env")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path          string
		allowInsecure bool
	}{{path, false}, {path, true}, {link, false}} {
		got, err := ReadEnvFile(tc.path, tc.allowInsecure)
		if err == nil {
			t.Errorf("ReadEnvFile(%s, %v) = %q, want a refusal of a file owned by uid %d", tc.path, tc.allowInsecure, got, nobody)
			continue
		}
		for _, want := range []string{tc.path, "owned by uid 65534", "chown root"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		if strings.Contains(err.Error(), "attacker.example") {
			t.Error("the error quotes a value")
		}
	}
	if err := os.Chown(path, 0, nobody); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadEnvFile(path, false); err != nil || len(got) != 1 {
		t.Errorf("root-owned 0640: %q, %v", got, err)
	}
}
