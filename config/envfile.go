package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"unicode/utf8"
)

// maxEnvFileBytes bounds the environment file: a configuration of hundreds
// of profiles is tens of KiB.
const maxEnvFileBytes = 1 << 20

// EnvVar is one assignment of an environment file.
type EnvVar struct {
	Name, Value string
}

// ReadEnvFile reads the environment file at path (CWCREDS_ENV_FILE) and
// returns its assignments. It does not touch the process environment: the
// caller sets them there before calling Load, which reads only the process
// environment.
//
// The syntax is the part of systemd's EnvironmentFile= syntax that means
// the same to systemd and to this reader, so a file works with either, and
// anything else is an error rather than a guess:
//
//   - blank lines, and lines whose first non-blank character is # or ;,
//     are ignored; a comment cannot follow a value on its line;
//   - every other line is NAME=VALUE; blanks around NAME and VALUE are
//     dropped; NAME is a CWCREDS_ variable, other than CWCREDS_ENV_FILE;
//   - VALUE is taken as written (no $VARIABLE expansion), or wrapped whole
//     in single quotes (taken as written), or in double quotes, where \",
//     \\, \$ and \` stand for the second character and no other backslash
//     is allowed;
//   - an unquoted value cannot contain quotes or backslashes, and a quoted
//     one must close on its line;
//   - "export NAME=..." is refused: systemd does not accept it.
//
// A name set twice takes its last value (as with systemd), at the place it
// was first set. Only CWCREDS_ variables may be set, because the daemon
// reads the file after it started: a variable such as HTTPS_PROXY or
// GODEBUG would not take effect, so it belongs in the unit (Environment=).
//
// The file must be a regular file of at most 1 MiB. A symlink is followed
// (a Kubernetes ConfigMap volume publishes files through ..data links),
// and the checks apply to the file reached, as opened. Whoever can write
// it chooses which token files and API the daemon uses, so it must be
// owned by the daemon's user (effective uid) or root, whatever
// allowInsecure says (another user could rewrite a file they own at
// will, whatever its mode), and a file writable by its group or others is
// refused unless allowInsecure; a group-readable one (root:cwcreds 0640,
// as scripts/install.sh makes it) is fine. Errors name the path and, for a
// malformed line, its number as "path:line: reason", every malformed line
// at once; they never quote a value.
func ReadEnvFile(path string, allowInsecure bool) ([]EnvVar, error) {
	// O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it is
	// refused below. Reads of regular files ignore the flag.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("environment file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("environment file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("environment file %s is not a regular file", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int64(st.Uid) != int64(os.Geteuid()) {
		return nil, fmt.Errorf("environment file %s is owned by uid %d, not by the daemon's user (uid %d) or root, "+
			"so its owner can rewrite it and choose which credentials the daemon uses; run chown root %s "+
			"(scripts/install.sh makes it root:cwcreds 0640); %s does not lift this check",
			path, st.Uid, os.Geteuid(), path, varAllowInsecure)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 && !allowInsecure {
		return nil, fmt.Errorf("environment file %s has mode %04o, so users other than its owner can write it "+
			"and choose which credentials the daemon uses; run chmod go-w %s (scripts/install.sh makes it "+
			"root:cwcreds 0640), or set %s=true in the daemon's environment if that access is intended",
			path, uint32(perm), path, varAllowInsecure)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxEnvFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("environment file: read %s: %w", path, err)
	}
	if len(b) > maxEnvFileBytes {
		return nil, fmt.Errorf("environment file %s is larger than 1 MiB; it should hold a few CWCREDS_ variables", path)
	}
	return parseEnvFile(path, string(b))
}

// parseEnvFile parses content, the text of the file at path.
func parseEnvFile(path, content string) ([]EnvVar, error) {
	var (
		out  []EnvVar
		errs []error
		at   = make(map[string]int) // name -> index in out
	)
	lines := strings.Split(content, "\n")
	for i, line := range lines {
		if i == len(lines)-1 && line == "" {
			break // the file's final newline
		}
		name, value, ok, msg := parseEnvLine(line)
		if msg != "" {
			errs = append(errs, fmt.Errorf("%s:%d: %s", path, i+1, msg))
			continue
		}
		if !ok {
			continue
		}
		if j, dup := at[name]; dup {
			out[j].Value = value
			continue
		}
		at[name] = len(out)
		out = append(out, EnvVar{Name: name, Value: value})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// parseEnvLine parses one line. ok is false for a blank or comment line;
// msg says what is wrong with a malformed one, never quoting its value.
func parseEnvLine(line string) (name, value string, ok bool, msg string) {
	line = strings.TrimSuffix(line, "\r") // systemd reads CRLF files too
	switch {
	case strings.ContainsRune(line, 0):
		return "", "", false, "contains a NUL byte"
	case strings.ContainsRune(line, '\r'):
		return "", "", false, "contains a carriage return inside the line"
	case !utf8.ValidString(line):
		return "", "", false, "is not valid UTF-8"
	}
	t := strings.TrimLeft(line, " \t")
	if t == "" || t[0] == '#' || t[0] == ';' {
		return "", "", false, ""
	}
	name, raw, found := strings.Cut(t, "=")
	if !found {
		return "", "", false, "is not NAME=value; comment lines start with # or ;"
	}
	name = strings.TrimRight(name, " \t")
	if rest, isExport := strings.CutPrefix(name, "export"); isExport && rest != "" && strings.TrimLeft(rest, " \t") != rest {
		return "", "", false, `starts with "export", which systemd's EnvironmentFile= does not accept; remove it`
	}
	if msg := checkEnvName(name); msg != "" {
		return "", "", false, msg
	}
	value, msg = parseEnvValue(strings.Trim(raw, " \t"))
	if msg != "" {
		return "", "", false, name + ": " + msg
	}
	return name, value, true, ""
}

// checkEnvName returns what is wrong with a variable name set in the file,
// or "". A name is quoted only once it is known to be a valid one, which a
// secret pasted into the file is not likely to be, and show describes a
// long one rather than quoting it.
func checkEnvName(name string) string {
	switch {
	case name == "":
		return "has no variable name before '='"
	case !isEnvName(name):
		return "the text before '=' is not a variable name (letters, digits and '_', not starting with a digit)"
	case name == varEnvFile:
		return varEnvFile + " cannot be set in the file it names; set it in the daemon's environment " +
			"(Environment= in the unit)"
	case !strings.HasPrefix(strings.ToUpper(name), envPrefix+"_"):
		return fmt.Sprintf("%s is not a CWCREDS_ variable; the daemon reads this file after it started, so other "+
			"variables would not take effect: set them with Environment= in the unit (systemctl edit cwcreds)", show(name))
	}
	return ""
}

// isEnvName reports whether name is a portable environment variable name.
func isEnvName(name string) bool {
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return name != ""
}

// parseEnvValue decodes a value with the blanks around it already
// trimmed, or says what is wrong with it.
func parseEnvValue(v string) (string, string) {
	if v == "" {
		return "", ""
	}
	switch v[0] {
	case '\'':
		body, rest, closed := strings.Cut(v[1:], "'")
		switch {
		case !closed:
			return "", "the single quote is not closed on this line; a value cannot span lines"
		case rest != "":
			return "", "text follows the closing quote; quote the whole value, and put comments on a line of their own"
		}
		return body, ""
	case '"':
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			switch c := v[i]; c {
			case '"':
				if i != len(v)-1 {
					return "", "text follows the closing quote; quote the whole value, and put comments on a line of their own"
				}
				return b.String(), ""
			case '\\':
				if i+1 == len(v) || !strings.ContainsRune("\"\\$`", rune(v[i+1])) {
					return "", "inside double quotes a backslash must be followed by \", \\, $ or ` " +
						"(systemd keeps other backslashes, a shell does not); use single quotes for a literal backslash"
				}
				i++
				b.WriteByte(v[i])
			default:
				b.WriteByte(c)
			}
		}
		return "", "the double quote is not closed on this line; a value cannot span lines"
	}
	switch {
	case strings.ContainsAny(v, `"'`):
		return "", "an unquoted value contains a quote; wrap the whole value in quotes"
	case strings.Contains(v, `\`):
		return "", `an unquoted value contains a backslash, which systemd would drop; wrap the value in single quotes`
	case strings.Contains(v, " #") || strings.Contains(v, "\t#"):
		return "", "systemd takes everything after '=' as the value, including ' #...'; put comments on a line of their own"
	}
	return v, ""
}
